"""CUDA paths: label_pool on the GPU, uint8 batches normalized on the GPU, and train.py (hard labels, MILe, LabelPooling) under autocast.

Skipped without a GPU (CI has none); run on a GPU machine with ``python -m pytest -m cuda``.
"""
import json

import pytest
import torch
from torchvision.ops import roi_align

from timm_multilabel import label_pool
from timm_multilabel.data.digits_grid import DigitsGrid
from timm_multilabel.relabel.digit_maps import write_oracle_maps
from timm_multilabel.relabel.pooling import densify_label_map, map_rois

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]

SEED = 5
TINY = ['--dataset', 'digits-grid', '--model', 'test_resnet', '--img-size', '32', '--train-num-samples', '256',
        '--val-num-samples', '128', '-b', '32', '--workers', '2', '--seed', str(SEED), '--log-interval', '1000',
        '--checkpoint-hist', '1']


def _random_maps(n, k, size, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, size, size, generator=g).mul_(3).sort(1, descending=True).values
    classes = torch.rand(n * size * size, num_classes, generator=g).topk(k, dim=1).indices
    classes = classes.view(n, size, size, k).permute(0, 3, 1, 2).contiguous()
    xy1 = torch.rand(n, 2, generator=g) * 0.5
    wh = torch.rand(n, 2, generator=g) * 0.45 + 0.05  # boxes stay inside the image
    return scores, classes, torch.cat([xy1, xy1 + wh], 1)


def test_uint8_batches_are_normalized_on_the_gpu_as_on_the_cpu():
    from timm_multilabel.training.device_batches import BatchNormalize
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    normalize = BatchNormalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    cpu = normalize(images)
    gpu = normalize(images.cuda())
    assert gpu.device.type == 'cuda' and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-6, rtol=0)
    torch.testing.assert_close(normalize(images), cpu)  # the statistics moved to the GPU and back


@pytest.mark.parametrize('output_size', [1, 3])
def test_label_pool_on_cuda_matches_cpu_and_cuda_roi_align(output_size):
    scores, classes, boxes = _random_maps(64, 5, 15, 1000)
    cpu = label_pool(scores, classes, boxes, 1000, output_size=output_size, fill=0.5)
    gpu_in = [t.cuda() for t in (scores, classes, boxes)]
    gpu = label_pool(*gpu_in, 1000, output_size=output_size, fill=0.5)
    assert gpu.device.type == 'cuda' and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-6)
    dense = densify_label_map(gpu_in[0], gpu_in[1], 1000, fill=0.5)
    ref = roi_align(dense, map_rois(gpu_in[2], (15, 15)), output_size=output_size).softmax(1)
    torch.testing.assert_close(gpu, ref.squeeze(-1).squeeze(-1) if output_size == 1 else ref, rtol=1e-4, atol=1e-6)


def test_label_pool_on_cuda_keeps_the_half_precision_maps_dtype_contract():
    scores, classes, boxes = _random_maps(8, 5, 7, 100)
    out = label_pool(scores.cuda().half(), classes.cuda(), boxes.cuda(), 100)
    ref = label_pool(scores.half().float(), classes, boxes, 100)
    torch.testing.assert_close(out.float().cpu(), ref, rtol=2e-3, atol=1e-4)


def _summary(out):
    return json.loads((out / 'summary.json').read_text())


@pytest.mark.parametrize('extra', [
    ['--amp'],
    ['--amp', '--amp-dtype', 'bfloat16', '--mile', '--mile-kt', '2', '--mile-ks', '2'],
], ids=['hard-fp16', 'mile-bf16'])
def test_train_py_runs_on_cuda_under_autocast(tmp_path, run, extra):
    out = tmp_path / 'out'
    proc = run(['train.py', *TINY, '--epochs', '2', *extra, '--output', out, '--checkpoint-hist', '2'])
    assert 'on cuda' in proc.stderr  # the run's header line
    summary = _summary(out)
    assert summary['eval_samples'] == 128 and summary['num_updates'] == 16
    assert all(v is not None and v == v for v in summary['metrics'].values())  # finite, not NaN
    # the fp16 loss scaler did not skip every step: epoch 1 moved the weights, and they stay finite
    w0, w1 = (torch.load(out / f'checkpoint-{e}.pth.tar', weights_only=True)['state_dict'] for e in (0, 1))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    assert all(torch.isfinite(v).all() for v in w1.values() if v.is_floating_point())
    import timm
    model = timm.create_model(f'local-dir:{out}', pretrained=True)  # the Hugging Face model folder
    assert next(model.parameters()).device.type == 'cpu'  # GPU-trained weights load on a CPU machine


def test_relabel_maps_train_on_cuda(tmp_path, run):
    maps = write_oracle_maps(DigitsGrid('train', num_samples=256, seed=SEED), tmp_path / 'maps')
    out = tmp_path / 'out'
    proc = run(['train.py', *TINY, '--epochs', '1', '--amp', '--relabel-maps', maps, '--cutmix', '1.0',
                '--output', out])
    assert 'on cuda' in proc.stderr  # the run's header line
    summary = _summary(out)
    assert summary['method']['name'].startswith('relabel') and summary['eval_samples'] == 128
    assert all(v is not None and v == v for v in summary['metrics'].values())

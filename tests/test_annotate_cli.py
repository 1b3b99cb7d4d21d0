"""`timm-multilabel annotate`: folder of images -> label-map dataset, resumable."""
import os

import numpy as np
import pytest
import torch

from timm_multilabel.cli import main
from timm_multilabel.relabel.annotate import LabelMapAnnotator, create_annotator
from timm_multilabel.relabel.store import load_label_maps
from timm_multilabel.relabel.writer import ShardWriter, list_shards, read_run_plan

LAYOUT = ['a/x1.jpg', 'a/x2.png', 'a/deep/x3.jpeg', 'b/y1.JPG', 'b/y2.png', 'c.png', 'd/z.webp']
IDS = sorted(os.path.splitext(p)[0] for p in LAYOUT)


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i, rel in enumerate(LAYOUT):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (30 + 7 * i, 60 - 3 * i, 3), dtype=np.uint8)).save(path)
    (root / 'notes.txt').write_text('not an image')
    (root / '.hidden').mkdir()
    Image.new('RGB', (8, 8)).save(root / '.hidden' / 'skip.png')
    return root


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    import timm
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('w') / 'test_resnet.pth'
    torch.save(timm.create_model('test_resnet').state_dict(), path)
    return str(path)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path / 'hf_cache'))


def _args(image_dir, weights, out, *extra):
    return ['annotate', '--model', 'test_resnet', '--pretrained-path', weights, '--data-dir', str(image_dir),
            '--output', str(out), '--img-size', '64', '--topk', '3', '--shard-size', '3', '--batch-size', '2',
            '--workers', '0', *extra]


def _store(out, tmp_path):
    return load_label_maps(str(out), cache_dir=str(tmp_path / 'store_cache'))


def test_annotate_folder_end_to_end(image_dir, weights, tmp_path, monkeypatch):
    # on a GPU the CLI runs there: full float32 convolutions (no TF32; matmuls are full float32 by
    # default) keep it within 1e-5 of the CPU reference
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    out = tmp_path / 'maps'
    assert main(_args(image_dir, weights, out, '--dtype', 'float32', '--workers', '2')) == 0
    assert [os.path.basename(p) for p in list_shards(str(out))] == [
        'train-00000-of-00003.parquet', 'train-00001-of-00003.parquet', 'train-00002-of-00003.parquet']
    store = _store(out, tmp_path)
    assert store.image_ids == IDS  # relative paths without extension, nested folders, hidden ones skipped
    assert store.map_size == (2, 2) and store.topk == 3 and store.info['input_size'] == 64
    assert store.info['annotator'] == 'test_resnet' and 'sha256' in store.info['weights']
    assert len(store.class_names) == 1000 and store.class_names[0].startswith('tench')
    # the maps are the annotator's output on the whole images
    annotator = create_annotator('test_resnet', pretrained_path=weights, topk=3, img_size=64)
    from PIL import Image
    x = torch.stack([annotator.transform(Image.open(image_dir / p).convert('RGB')) for p in LAYOUT])
    with torch.inference_mode():
        scores, classes = annotator(x)
    for i, rel in enumerate(LAYOUT):
        s, c = store[os.path.splitext(rel)[0]]
        assert torch.equal(c, classes[i])
        assert torch.allclose(s, scores[i], atol=1e-5)


def test_refuses_existing_output_and_mismatched_resume(image_dir, weights, tmp_path, capsys):
    out = tmp_path / 'maps'
    assert main(_args(image_dir, weights, out)) == 0
    before = {p: os.path.getmtime(p) for p in list_shards(str(out))}
    assert main(_args(image_dir, weights, out)) == 2
    assert '--resume' in capsys.readouterr().err
    assert main(_args(image_dir, weights, out, '--resume', '--topk', '2')) == 2
    assert 'topk=3' in capsys.readouterr().err
    assert main(_args(image_dir, weights, out, '--resume')) == 0  # nothing left to do
    assert {p: os.path.getmtime(p) for p in list_shards(str(out))} == before
    assert main(_args(image_dir, weights, out, '--overwrite', '--topk', '2', '--shard-size', '10')) == 0
    assert len(list_shards(str(out))) == 1 and _store(out, tmp_path).topk == 2
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'mine.txt').write_text('x')
    assert main(_args(image_dir, weights, tmp_path / 'other')) == 2
    assert 'already holds files' in capsys.readouterr().err


def test_resume_after_interruption_annotates_each_image_once(image_dir, weights, tmp_path, monkeypatch):
    ref = tmp_path / 'ref'
    assert main(_args(image_dir, weights, ref)) == 0
    seen = []
    forward = LabelMapAnnotator.forward

    def counting_forward(self, images):
        seen.append(len(images))
        return forward(self, images)

    monkeypatch.setattr(LabelMapAnnotator, 'forward', counting_forward)
    submit = ShardWriter.submit
    calls = []

    def interrupted_submit(self, index, *a):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while shard 1 is handed over
        return submit(self, index, *a)

    out = tmp_path / 'maps'
    monkeypatch.setattr(ShardWriter, 'submit', interrupted_submit)
    assert main(_args(image_dir, weights, out)) == 130
    assert [os.path.basename(p) for p in list_shards(str(out))] == ['train-00000-of-00003.parquet']
    assert not (out / 'README.md').exists()
    (out / 'data' / '.tmp-leftover.parquet').write_bytes(b'partial')  # a write cut short
    with pytest.raises(Exception, match='unfinished annotate run'):
        _store(out, tmp_path)
    monkeypatch.setattr(ShardWriter, 'submit', submit)
    seen.clear()
    assert main(_args(image_dir, weights, out, '--resume')) == 0
    assert sum(seen) == len(IDS) - 3  # shard 0 (3 images) was not redone
    assert sorted(os.listdir(out / 'data')) == [
        'train-00000-of-00003.parquet', 'train-00001-of-00003.parquet', 'train-00002-of-00003.parquet']
    got, want = _store(out, tmp_path), _store(ref, tmp_path)
    assert got.image_ids == want.image_ids == IDS
    gs, gc = got.get_batch(IDS)
    ws, wc = want.get_batch(IDS)
    assert torch.equal(gc, wc) and torch.allclose(gs, ws, rtol=2e-3, atol=1e-4)


def test_resume_of_a_run_started_in_the_flat_layout_continues_in_it(image_dir, weights, tmp_path, capsys):
    """A folder an older timm-multilabel started (flat shards, a run plan without 'layout') is finished
    in the flat layout, so it keeps one layout; flat shards under a plan that says otherwise are refused."""
    import json
    import pyarrow.parquet as pq
    from timm_multilabel.relabel.writer import LAYOUT_FLAT, RUN_FILE, read_map_info, write_shard
    ref, out = tmp_path / 'ref', tmp_path / 'maps'
    assert main(_args(image_dir, weights, ref)) == 0
    want = _store(ref, tmp_path)
    assert want.layout == 2
    # what the old writer left after an interruption: shard 0 flat, the plan without 'layout'
    (out / 'data').mkdir(parents=True)
    s0, c0 = want.get_batch(IDS[:3])
    write_shard(str(out), 0, 3, IDS[:3], s0, c0, 'float16', 1000, LAYOUT_FLAT)
    plan = read_run_plan(str(ref))
    plan.pop('layout')
    (out / RUN_FILE).write_text(json.dumps(plan))
    assert main(_args(image_dir, weights, out, '--resume')) == 0
    assert all(str(pq.read_schema(p).field('scores').type) == 'list<element: halffloat>' for p in list_shards(str(out)))
    assert read_map_info(str(out))['layout_version'] == LAYOUT_FLAT and read_run_plan(str(out))['layout'] == 1
    got = _store(out, tmp_path)
    gs, gc = got.get_batch(IDS)
    ws, wc = want.get_batch(IDS)
    assert got.layout == LAYOUT_FLAT and torch.equal(gc, wc) and torch.equal(gs, ws)
    # a plan that says layout 2 over flat shards (edited by hand): refused in one line
    plan['layout'] = 2
    (out / RUN_FILE).write_text(json.dumps(plan))
    capsys.readouterr()
    assert main(_args(image_dir, weights, out, '--resume')) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if 'error:' in ln]
    assert len(err) == 1 and 'are in flat [K*H*W] lists (layout 1), its run plan says fixed-shape' in err[0]


def test_bad_inputs_are_one_line_errors(image_dir, weights, tmp_path, capsys):
    assert main(_args(image_dir, weights, tmp_path / 'o1', '--model', 'no_such_model')) == 2
    assert "unknown timm model 'no_such_model'" in capsys.readouterr().err
    assert main(_args(tmp_path / 'missing', weights, tmp_path / 'o2')) == 2
    assert 'image folder not found' in capsys.readouterr().err
    bad = tmp_path / 'bad_images'
    bad.mkdir()
    (bad / 'ok.png').write_bytes((image_dir / 'c.png').read_bytes())
    (bad / 'broken.jpg').write_bytes(b'not a jpeg at all')
    assert main(_args(bad, weights, tmp_path / 'o3')) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if 'error:' in ln]
    assert len(err) == 1 and err[0].startswith(f'timm-multilabel annotate: error: corrupt image {bad / "broken.jpg"} (')
    assert not list_shards(str(tmp_path / 'o3'))


def test_plan_records_what_resume_compares(image_dir, weights, tmp_path):
    out = tmp_path / 'maps'
    assert main(_args(image_dir, weights, out, '--limit', '4')) == 0
    plan = read_run_plan(str(out))
    assert plan['num_images'] == 4 and plan['num_shards'] == 2 and plan['map_size'] == [2, 2]
    assert _store(out, tmp_path).image_ids == IDS[:4]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_write_one_consistent_dataset(image_dir, weights, tmp_path, run):
    """torchrun (what `accelerate launch` runs) with 2 CPU processes: gloo, shards dealt out."""
    single, multi = tmp_path / 'single', tmp_path / 'multi'
    assert main(_args(image_dir, weights, single, '--shard-size', '2')) == 0
    proc = run(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '-m', 'timm_multilabel.cli',
                *_args(image_dir, weights, multi, '--shard-size', '2')], env={'OMP_NUM_THREADS': '1'})
    assert 'on 2 processes' in proc.stderr + proc.stdout
    a, b = _store(single, tmp_path), _store(multi, tmp_path)
    assert a.image_ids == b.image_ids == IDS
    sa, ca = a.get_batch(IDS)
    sb, cb = b.get_batch(IDS)
    assert torch.equal(ca, cb) and torch.allclose(sa, sb, rtol=2e-3, atol=1e-4)


def test_show_draws_the_top_classes(tmp_path, capsys):
    """`show`: the image's top classes pooled over the whole map, heat maps with rows = y."""
    from PIL import Image
    from timm_multilabel.relabel.show import show_label_map
    from timm_multilabel.relabel.writer import write_dataset_card, write_shard
    scores = torch.tensor([[[5.0, 5.0], [1.0, 1.0]], [[1.0, 1.0], [4.0, 4.0]]])[None]  # [1, K=2, H=2, W=2]
    classes = torch.tensor([[[3, 3], [7, 7]], [[7, 7], [3, 3]]])[None]
    maps = tmp_path / 'maps'
    write_shard(str(maps), 0, 1, ['cls/img'], scores, classes, 'float16', 10)
    write_dataset_card(str(maps), dict(annotator='m', input_size=64, map_size=(2, 2), topk=2, dtype='float16',
                                       num_classes=10, class_names=[f'name{i}' for i in range(10)]))
    (tmp_path / 'cls').mkdir()
    Image.new('RGB', (40, 30), (200, 100, 50)).save(tmp_path / 'cls' / 'img.jpg')
    out = tmp_path / 'figs' / 'img.png'
    rows = show_label_map(str(maps), str(tmp_path / 'cls' / 'img.jpg'), str(out), topk=2,
                          cache_dir=str(tmp_path / 'c'))
    # pooled logits: class 3 -> (5 + 5 + 4 + 4) / 4 = 4.5, class 7 -> 1, the 8 others 0; softmax
    z = np.exp(4.5) + np.exp(1.0) + 8
    assert [r[0] for r in rows] == [3, 7] and rows[0][1] == 'name3'
    assert np.isclose(rows[0][2], np.exp(4.5) / z, atol=1e-4) and np.isclose(rows[1][2], np.exp(1.0) / z, atol=1e-4)
    assert rows[0][3].tolist() == [[5.0, 5.0], [4.0, 4.0]]  # row 0 is the top
    assert rows[1][3].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with Image.open(out) as png:
        assert png.format == 'PNG' and png.size[0] > 200
    assert main(['show', '--maps', str(maps), '--image', str(tmp_path / 'cls' / 'img.jpg'),
                 '--out', str(tmp_path / 'cli.png'), '--image-id', 'cls/img', '--topk', '1']) == 0
    assert (tmp_path / 'cli.png').exists() and 'name3' in capsys.readouterr().out
    assert main(['show', '--maps', str(maps), '--image', str(tmp_path / 'cls' / 'img.jpg'),
                 '--out', str(tmp_path / 'x.png'), '--image-id', 'other']) == 2
    assert "no label map for image id 'other'" in capsys.readouterr().err


def _parquet_dataset(root, image_ids, seed=0):
    """A local Hugging Face image dataset (one Parquet shard) with an image_id column."""
    import datasets
    from PIL import Image
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 255, (20 + 5 * i, 40 - 2 * i, 3), dtype=np.uint8))
            for i in range(len(image_ids))]
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b']),
                                  'image_id': datasets.Value('string')})
    table = datasets.Dataset.from_dict(
        {'image': imgs, 'label': [i % 2 for i in range(len(image_ids))], 'image_id': list(image_ids)},
        features=features)
    (root / 'data').mkdir(parents=True)
    table.to_parquet(str(root / 'data' / 'train-00000-of-00001.parquet'))
    return imgs


def test_annotate_a_hugging_face_dataset_keys_maps_by_train_py_ids(weights, tmp_path, monkeypatch):
    pytest.importorskip('datasets')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)  # a GPU run stays within 1e-5 of the CPU
    ids = ['n02/img_7', 'n01/img_3', 'n02/img_1', 'n01/img_9', 'x']  # rows not in id order
    imgs = _parquet_dataset(tmp_path / 'hf', ids)
    name, cache = f'hfds/{tmp_path / "hf"}', str(tmp_path / 'cache')
    out = tmp_path / 'maps'
    assert main(['annotate', '--model', 'test_resnet', '--pretrained-path', weights, '--dataset', name,
                 '--data-dir', cache, '--output', str(out), '--img-size', '64', '--topk', '3', '--shard-size', '2',
                 '--batch-size', '2', '--workers', '0', '--dtype', 'float32']) == 0
    store = _store(out, tmp_path)
    assert store.image_ids == sorted(ids) and len(list_shards(str(out))) == 3
    from timm_multilabel.data import create_dataset, get_image_ids
    assert set(get_image_ids(create_dataset(name, root=cache, split='train'))) == set(store.image_ids)
    annotator = create_annotator('test_resnet', pretrained_path=weights, topk=3, img_size=64)
    with torch.inference_mode():
        scores, classes = annotator(torch.stack([annotator.transform(im.convert('RGB')) for im in imgs]))
    for row, image_id in enumerate(ids):  # each map is its own row's image, whatever the row order
        s, c = store[image_id]
        assert torch.equal(c, classes[row]) and torch.allclose(s, scores[row], atol=1e-5)


def test_hugging_face_dataset_with_a_repeated_id_is_refused_before_writing(weights, tmp_path, monkeypatch, capsys):
    pytest.importorskip('datasets')
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    _parquet_dataset(tmp_path / 'hf', ['a', 'b', 'a'])
    out = tmp_path / 'maps'
    assert main(['annotate', '--model', 'test_resnet', '--pretrained-path', weights, '--dataset',
                 f'hfds/{tmp_path / "hf"}', '--data-dir', str(tmp_path / 'cache'), '--output', str(out),
                 '--workers', '0']) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "rows 0 and 2 share the image id 'a'" in err and err.startswith('timm-multilabel annotate: error:')
    assert not out.exists()


def test_annotate_needs_a_folder_or_a_dataset(tmp_path, capsys):
    assert main(['annotate', '--model', 'test_resnet', '--output', str(tmp_path / 'o')]) == 2
    assert 'give --data-dir (a folder of images) or --dataset' in capsys.readouterr().err


def test_symlink_loops_are_listed_once(tmp_path, caplog):
    import logging
    import time

    from PIL import Image

    from timm_multilabel.relabel.image_folder import list_images
    root = tmp_path / 'looped'
    for rel in ('a/x.png', 'a/deep/y.jpg', 'b/z.png'):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (4, 4)).save(root / rel)
    (root / 'a' / 'deep' / 'up').symlink_to('../..', target_is_directory=True)  # a link to an ancestor
    (root / 'b' / 'loop').symlink_to('..', target_is_directory=True)  # and a second loop
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger='timm_multilabel'):
        listing = list_images(str(root))
    assert time.perf_counter() - t0 < 5
    assert [i for i, _ in listing] == ['a/deep/y', 'a/x', 'b/z']
    assert f'{root}: 3 images, 2 symlinked folders skipped (already listed), 0 non-image files ignored' in caplog.messages


def test_annotate_reads_16bit_images_scaled(tmp_path):
    from PIL import Image

    from timm_multilabel.relabel.image_folder import ImageListDataset
    path = tmp_path / 'g16.png'
    Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))).save(path)
    img, _, err = ImageListDataset([str(path)], lambda im: np.asarray(im), 8)[0]
    assert err == '' and img[0, 0].tolist() == [0, 0, 0] and img[0, -1].tolist() == [255, 255, 255]
    assert 60 < len(np.unique(img[0, :, 0])) and (np.diff(img[0, :, 0].astype(int)) >= 0).all()

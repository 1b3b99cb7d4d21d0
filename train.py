#!/usr/bin/env python3
"""Train a timm classifier with multi-label supervision recovered from single labels.

timm's train.py flags with timm's meanings, on Hugging Face Accelerate:

    python train.py                                    # small ResNet on built-in digits-grid
    python train.py --mile --mile-kt 60 --mile-ks 15 --mile-rho 0.1
    python train.py --data-dir /imagenet --dataset '' --model resnet50 --relabel-maps org/relabel-maps
    accelerate launch --multi_gpu --num_processes 8 train.py -c config.yaml   # 8 GPUs (--multi_gpu also on CPU)

The loop reads top to bottom: data, model, loss and task, optimizer and schedule, Accelerate's
``prepare``, then epochs of (train, evaluate, checkpoint). Everything else is in
``timm_multilabel.training``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from timm.data import create_transform, resolve_data_config
from timm.models import load_checkpoint
from timm.optim import create_optimizer_v2, optimizer_kwargs
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import dispatch_clip_grad
from tqdm.auto import tqdm

from timm_multilabel import UserError, create_loss, create_target_transform, create_task
from timm_multilabel.checkpoint_files import load_checkpoint_file
from timm_multilabel.data import create_dataset, get_class_names, get_num_classes, get_real_labels
from timm_multilabel.data.bad_images import drop_missing, read_skip_log
from timm_multilabel.data.dataset_factory import dataset_options, image_folder_root
from timm_multilabel.data.images import bad_image_message
from timm_multilabel.distill import distill_task, distill_task_kwargs
from timm_multilabel.data.real_labels import check_real_labels, load_real_labels, real_labels_for_files
from timm_multilabel.fileio import FolderLock, remove_stale_temps
from timm_multilabel.hub import push_model_folder, save_model_folder
from timm_multilabel.logs import setup_logging
from timm_multilabel.losses import output_activation
from timm_multilabel.method import describe_method
from timm_multilabel.task import LoopTask
from timm_multilabel.training.args import check_args, loss_kwargs, loss_name, parse_args, task_kwargs, task_name
from timm_multilabel.training.checkpoint import CheckpointKeeper, set_rng_state
from timm_multilabel.training.device_batches import BatchNormalize, uint8_eval_images
from timm_multilabel.training.evaluate import evaluate
from timm_multilabel.training import loaders, model_setup
from timm_multilabel.training import trackers
from timm_multilabel.training.relabel import build_relabel_training
from timm_multilabel.training.variable_batches import build_variable_batches
from timm_multilabel.training.report import (
    METRIC_KEYS, collapse_warnings, results_table, write_epoch_log, write_json)
from timm_multilabel.training.curves import CurvesProcess
from timm_multilabel.training.resume import RunCheckpoints, TrainState, resume_run

_logger = logging.getLogger('train')

SKIPPED_IMAGES = 'skipped_images.txt'  # --skip-bad-images: one undecodable training image per line


def resolve_output_dir(args) -> Path:
    """The run folder; one that holds another run is refused unless --resume or --overwrite."""
    if args.output:
        out = Path(args.output)
    else:
        name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model.replace('/', '_')])
        out = Path('output/train') / name
    if out.exists() and not out.is_dir():
        raise UserError(f'--output {out}: exists and is not a folder')
    ancestor = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f'--output {out}: cannot be created ({ancestor} is not a writable folder)')
    holds_run = out.is_dir() and any((out / f).exists() for f in ('summary.json', 'args.yaml', 'last.pth.tar'))
    if holds_run and not (args.resume or args.overwrite):
        raise UserError(f'--output {out}: holds another run; pass --resume {out} to continue it or --overwrite')
    return out


def _real_labels_for(dataset, source: str):
    """ReaL label sets of the eval images: matched by ``ILSVRC2012_val_*`` file name when the dataset
    has file names (class-folder layouts reorder the images), else by position."""
    table = load_real_labels(None if source == 'timm' else source)
    if hasattr(dataset, 'filenames'):
        return real_labels_for_files(dataset.filenames(basename=True), table)
    check_real_labels(table, len(dataset), where='the validation set')
    return table


def scaled_lr(args, world_size: int, batch_size: Optional[float] = None) -> float:
    """timm's rule: --lr if given, else --lr-base scaled by the global batch size (``batch_size``
    per process: --batch-size, or the policy average of --train-img-sizes)."""
    if args.lr is not None:
        return args.lr
    global_batch = (batch_size or args.batch_size) * world_size * args.grad_accum_steps
    ratio = global_batch / args.lr_base_size
    scale = args.lr_base_scale or ('sqrt' if any(o in args.opt.lower() for o in ('ada', 'lamb')) else 'linear')
    return args.lr_base * (ratio ** 0.5 if scale == 'sqrt' else ratio)


@torch.no_grad()
def init_head(model: torch.nn.Module, scale: Optional[float] = None, bias: Optional[float] = None) -> None:
    """timm's --head-init-scale (classifier weight and bias times ``scale``), then --head-init-bias
    (classifier bias set to ``bias``)."""
    head = model.get_classifier()
    if (scale is not None or bias is not None) and getattr(head, 'bias', None) is None:
        raise UserError(f'--head-init-scale/--head-init-bias: the classifier of this model ({type(head).__name__}) '
                        f'has no bias to initialize')
    if scale is not None:
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    if bias is not None:
        head.bias.fill_(bias)


def build_target_transform(args, num_classes: int, dense_targets: bool):
    """The batch target transform of --target-transform (default: timm's Mixup/CutMix per --mixup,
    --cutmix; None when both are off); ``dense_targets``: targets are already [B, C]."""
    return create_target_transform(
        args.target_transform, num_classes=num_classes, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
        cutmix_minmax=args.cutmix_minmax, prob=args.mixup_prob, switch_prob=args.mixup_switch_prob,
        mode=args.mixup_mode, label_smoothing=args.smoothing, dense_targets=dense_targets)


def clip_gradients(accelerator: Accelerator, parameters, value: float, mode: str) -> None:
    """timm's --clip-grad/--clip-mode through Accelerate (which unscales fp16 gradients first)."""
    if mode == 'norm':
        accelerator.clip_grad_norm_(parameters, value)
    elif mode == 'value':
        accelerator.clip_grad_value_(parameters, value)
    else:
        dispatch_clip_grad(parameters, value, mode=mode)


def train_step(batch, state: TrainState, task: LoopTask, optimizer, scheduler, accelerator: Accelerator, args,
               mixup_fn=None, loss_scale=None, save_images_to: Optional[Path] = None,
               normalize=None) -> torch.Tensor:
    """One micro-batch ``(images [B, C, H, W], target [B] or [B, C])``: forward, backward and, at the
    end of an accumulation, the optimizer update and the task's, EMA's and schedule's steps.
    ``loss_scale(images)``: the factor of this batch's gradient (variable batch sizes, timm's
    --variable-batch-loss-scale / --naflex-loss-scale). ``save_images_to``: write the input batch
    there, as it goes into the model (--save-images). ``normalize``: uint8 images to normalized float
    (timm's prefetcher step, ``training/device_batches.py``). Returns the (unscaled) loss, a scalar tensor."""
    if batch is None:
        raise UserError('every image of a training batch failed to decode (see the skipped images log); '
                        'check the data with `timm-multilabel check-images`')
    images, target = batch
    if normalize is not None:
        images = normalize(images)
    if mixup_fn is not None:
        images, target = mixup_fn(images, target)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    if save_images_to is not None:
        model_setup.save_batch_images(images, save_images_to)
    with accelerator.accumulate(task.get_trainable_module()):
        with accelerator.autocast():
            loss = task(images, target)['loss']
        accelerator.backward(loss if loss_scale is None else loss * loss_scale(images))
        if accelerator.sync_gradients and args.clip_grad is not None:
            # timm: adaptive clipping (agc) leaves the classifier out
            clip_gradients(accelerator, task.get_clip_parameters(exclude_head='agc' in args.clip_mode), args.clip_grad,
                           args.clip_mode)
        optimizer.step()
        optimizer.zero_grad()
    if accelerator.sync_gradients:
        state.num_updates += 1
        task.after_update()
        task.update_ema(step=state.num_updates)
        scheduler.step_update(num_updates=state.num_updates)
        if args.synchronize_step:
            model_setup.synchronize(accelerator.device)
    return loss


def train_one_epoch(state: TrainState, task: LoopTask, loader, optimizer, scheduler, accelerator: Accelerator,
                    args, mixup_fn=None, checkpoints: Optional[RunCheckpoints] = None,
                    loss_scale=None, output_dir: Optional[Path] = None, normalize=None) -> Dict[str, Any]:
    """One epoch of optimizer updates; advances ``state.num_updates``.

    ``state.epoch_progress`` resumes an unfinished epoch (``batches`` done, running
    ``loss_sum``/``loss_count``/``seconds``/``cpu_seconds``, this rank's ``rng``); every
    ``--checkpoint-every`` (timm: ``--recovery-interval``) updates inside the epoch
    ``checkpoints.save_mid_epoch`` is called. ``--save-images`` writes each logged batch to ``output_dir``.
    A training image that cannot be decoded stops the epoch with a one-line UserError naming
    it, after a mid-epoch checkpoint of the batches done (one process, at an update boundary).
    """
    task.train()
    if mixup_fn is not None and args.mixup_off_epoch and state.epoch >= args.mixup_off_epoch:
        mixup_fn.mixup_enabled = False
    progress = state.epoch_progress or {}
    done = int(progress.get('batches', 0))
    loss_sum = torch.tensor(float(progress.get('loss_sum', 0.0)), dtype=torch.float64)
    loss_count = int(progress.get('loss_count', 0))
    total = len(loader)
    if done:
        loader = accelerator.skip_first_batches(loader, done)
    bar = tqdm(loader, desc=f'epoch {state.epoch}', disable=not accelerator.is_main_process, leave=False,
               dynamic_ncols=True, unit='batch', initial=done, total=total)
    start = time.time() - float(progress.get('seconds', 0.0))
    cpu_start = time.process_time() - float(progress.get('cpu_seconds', 0.0))

    def progress_now(batches: int) -> Dict[str, Any]:
        return {'batches': batches, 'loss_sum': loss_sum.item(), 'loss_count': loss_count,
                'seconds': time.time() - start, 'cpu_seconds': time.process_time() - cpu_start}

    resume_rng = progress.get('rng')
    batches_done = done
    every = model_setup.recovery_every(args)
    try:
        for batch_idx, batch in enumerate(bar, start=done):
            if resume_rng is not None:
                # after the (skipping) loader's first fetch, which draws its worker seed from the
                # global generator: continue from the state the interrupted run had at this batch
                set_rng_state(resume_rng)
                resume_rng = None
            log_now = accelerator.is_main_process and batch_idx % args.log_interval == 0
            images_to = output_dir / f'train-batch-{batch_idx}.jpg' if log_now and args.save_images and output_dir else None
            loss = train_step(batch, state, task, optimizer, scheduler, accelerator, args, mixup_fn, loss_scale,
                              save_images_to=images_to, normalize=normalize)
            loss_sum += loss.detach().double().cpu()
            loss_count += 1
            batches_done = batch_idx + 1
            if (checkpoints is not None and every and accelerator.sync_gradients
                    and state.num_updates % every == 0 and batches_done < total):
                checkpoints.save_mid_epoch(state, progress_now(batches_done))
            if log_now:
                bar.set_postfix({'loss': f'{loss.item():.4f}', 'lr': f'{optimizer.param_groups[0]["lr"]:.2e}',
                                 **task.log_state()})
    except Exception as e:
        message = bad_image_message(e)
        if message is None:
            raise
        bar.close()
        saved = ''
        # the checkpoint is collective: with one process only (other ranks would wait forever)
        if (checkpoints is not None and accelerator.num_processes == 1 and accelerator.sync_gradients
                and batches_done > done):
            checkpoints.save_mid_epoch(state, progress_now(batches_done))
            saved = f' after {batches_done} batches of epoch {state.epoch} (saved: --resume continues there)'
        raise UserError(f'{message}: training stopped{saved}; replace or remove the file, or pass '
                        f'--skip-bad-images to drop undecodable images') from None
    state.epoch_progress = None
    # Average the training loss over ranks so every process logs the same number.
    mean = accelerator.reduce(torch.tensor([loss_sum.item(), loss_count], device=accelerator.device), 'sum')
    return {'train_loss': (mean[0] / mean[1].clamp(min=1)).item(), 'num_updates': state.num_updates,
            'epoch_seconds': time.time() - start, 'epoch_cpu_seconds': time.process_time() - cpu_start,
            'lr': optimizer.param_groups[0]['lr']}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run training; returns the summary dict written to ``summary.json``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    try:
        args, args_text = parse_args(argv)
        return run(args, args_text)
    except UserError as e:
        if '--debug' in argv:
            raise
        print(f'train.py: error: {e}', file=sys.stderr)
        sys.exit(2)


def use_deterministic_kernels() -> None:
    """Deterministic cuDNN/cuBLAS/scatter kernels (--deterministic); ops without one only warn."""
    os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # read when cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def run(args, args_text: str) -> Dict[str, Any]:
    check_args(args)
    method = describe_method(args)
    output_dir = resolve_output_dir(args)

    if args.deterministic:
        use_deterministic_kernels()
    device_kwargs = model_setup.accelerator_kwargs(args)  # --device (cpu: gloo process groups), --no-ddp-bb
    mixed_precision = 'no'
    if args.amp:
        mixed_precision = 'bf16' if (args.amp_dtype == 'bfloat16' or device_kwargs['cpu']) else 'fp16'
    accelerator = Accelerator(
        **device_kwargs,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=args.grad_accum_steps,
        dataloader_config=loaders.dataloader_config(args),  # seedable sampler; --pin-mem: non-blocking copies
        step_scheduler_with_optimizer=False,
        **trackers.accelerator_kwargs(args, output_dir),  # --log-with / --log-wandb
    )
    is_main = accelerator.is_main_process
    if not is_main:
        setup_logging(verbose=False)
    if is_main and trackers.single_process_warning(accelerator.num_processes):
        _logger.warning(trackers.single_process_warning(accelerator.num_processes))
    set_seed(args.seed)

    # ---- data ----
    skip_log = output_dir / SKIPPED_IMAGES if args.skip_bad_images else None
    dataset_train = create_dataset(
        args.dataset, root=args.data_dir, split=args.train_split, is_training=True, seed=args.seed,
        num_samples=args.train_num_samples, skip_bad_images=args.skip_bad_images, skip_log=skip_log,
        **dataset_options(args))
    dataset_eval = create_dataset(
        args.dataset, root=args.data_dir, split=args.val_split, is_training=False, seed=args.seed,
        num_samples=args.val_num_samples, **dataset_options(args))
    train_root = image_folder_root(dataset_train)
    if train_root is not None and train_root == image_folder_root(dataset_eval):
        raise UserError(f'--data-dir {args.data_dir}: no {args.val_split!r} folder beside the training images, so '
                        f'evaluation would run on them; use timm\'s layout DIR/train/<class>/ and '
                        f'DIR/validation/<class>/, or name the evaluation folder with --val-split')
    if isinstance(dataset_train, torch.utils.data.IterableDataset):
        raise UserError(f'--dataset {args.dataset}: streaming datasets are not supported (train.py shuffles by '
                        f'index, resumes mid-epoch and keys label maps by image id); use a map-style one such as '
                        f'hfds/NAME or an image folder')
    data_classes = get_num_classes(dataset_train)
    class_names = get_class_names(dataset_train)  # stored in checkpoints and the model folder
    if args.num_classes and data_classes and args.num_classes != data_classes:
        raise UserError(f'--num-classes {args.num_classes}: the training data has {data_classes} classes; '
                        f'leave --num-classes out to take them from the data')
    num_classes = args.num_classes or data_classes
    if not num_classes:
        raise UserError('cannot tell the number of classes of this dataset; pass --num-classes')
    real_labels = get_real_labels(dataset_eval)
    if args.real_labels:
        real_labels = _real_labels_for(dataset_eval, args.real_labels)
    if real_labels is None and args.eval_metric not in ('top1', 'loss'):
        raise UserError(f'--eval-metric {args.eval_metric} needs multi-label ground truth: digits-grid, or '
                        f'--real-labels for ImageNet')

    # ---- model ----
    model_setup.set_global_model_flags(args)  # --fuser, --fast-norm
    # --gp, --bn-momentum, --bn-eps, --drop-block, --drop-path (--drop-connect), in_chans, scriptable;
    # --pretrained-path: the file's backbone, a new head (timm's pretrained_cfg_overlay num_classes=-1)
    model = model_setup.create_train_model(args, num_classes, **model_setup.pretrained_kwargs(args))
    if args.batch_size * args.grad_accum_steps == 1 and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise UserError(f'--batch-size 1: {args.model} has BatchNorm, which cannot train on a batch of one; '
                        f'use --batch-size >= 2')
    if args.initial_checkpoint:
        load_checkpoint(model, args.initial_checkpoint, weights_only=True)
    init_head(model, scale=args.head_init_scale, bias=args.head_init_bias)
    data_config = resolve_data_config(vars(args), model=model, verbose=False)
    timm_model = model  # the timm model itself, for the Hugging Face model folder
    # --grad-checkpointing, --split-bn, device and --model-dtype, --channels-last, --sync-bn
    model = model_setup.prepare_model_layers(model, args, accelerator.device, accelerator.num_processes)
    if args.torchscript:
        model = torch.jit.script(model)

    train_transform_kwargs = loaders.train_transform_kwargs(args, data_config)
    transform_eval = create_transform(
        data_config['input_size'], is_training=False, interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], crop_pct=data_config['crop_pct'],
        crop_mode=data_config.get('crop_mode'), use_prefetcher=uint8_eval_images(args))
    # timm's prefetcher step: uint8 batches from the workers are normalized on the device
    normalize = BatchNormalize(data_config['mean'], data_config['std'])

    collate_fn = None
    dense_targets = False
    if args.relabel_maps:
        with accelerator.main_process_first():  # the main process checks the maps; the others read its cache
            dataset_train, collate_fn = build_relabel_training(args, dataset_train, train_transform_kwargs,
                                                               num_classes)
        dense_targets = True
    else:  # timm's transform; --aug-splits: timm's AugMixDataset around the data
        dataset_train = loaders.set_train_transform(dataset_train, args, train_transform_kwargs)

    if args.skip_bad_images:  # undecodable images are dropped from their batch (and listed in summary.json)
        collate_fn = drop_missing(collate_fn or loaders.train_collate(args),
                                  even=args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None)

    # each sample's augmentation draws depend on (seed, epoch, index) only: the same for any
    # --workers, and exact when a run resumes mid-epoch; timm's sampler flags (--aug-repeats,
    # --epoch-repeats, --train-batches-per-epoch) set the epoch (see training/loaders.py)
    # --train-img-sizes / --naflex-loader: batches of scheduled shapes (training/variable_batches.py)
    variable = build_variable_batches(args, dataset_train, train_transform_kwargs, collate_fn,
                                      accelerator.num_processes, num_classes, model=model)
    train = variable or loaders.build_train_loader(args, dataset_train, collate_fn, accelerator.num_processes)
    loader_train, train_samples = train.loader, train.samples
    loader_eval = variable.eval_loader(args, dataset_eval, data_config) if variable is not None else None  # NaFlex
    if loader_eval is None:
        loader_eval = loaders.build_eval_loader(args, dataset_eval, transform_eval)  # --tta: N views an image

    # ---- loss, task, optimizer, schedule ----
    naflex = variable is not None and variable.mode == 'naflex'  # NaFlexMixup mixes in the loader
    mixup_fn = None if naflex else build_target_transform(args, num_classes, dense_targets)
    criterion = create_loss(loss_name(args), **loss_kwargs(
        args, soft_targets=mixup_fn is not None or dense_targets or (naflex and variable.soft_targets)))
    args.lr = scaled_lr(args, accelerator.num_processes, variable and variable.reference_batch_size)
    kd_task = distill_task(args)  # --kd-model-name: timm's distillation tasks
    task = create_task(
        kd_task or task_name(args), model=model, criterion=criterion, num_classes=num_classes,
        autocast=accelerator.autocast, device=accelerator.device,
        **(distill_task_kwargs(args) if kd_task else task_kwargs(args)))
    # as timm: the optimizer, EMA and compilation of the task's trainable module, then distributed wrapping
    optimizer = create_optimizer_v2(task.get_trainable_module(), **optimizer_kwargs(cfg=args), **args.opt_kwargs)
    if args.model_ema:  # --model-ema-force-cpu: kept on the CPU and not evaluated
        task.setup_ema(decay=args.model_ema_decay, use_warmup=args.model_ema_warmup,
                       device='cpu' if args.model_ema_force_cpu else None)
    eval_ema = args.model_ema and not args.model_ema_force_cpu
    if args.torchcompile:
        task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
        if eval_ema:
            task.compile_ema(backend=args.torchcompile, mode=args.torchcompile_mode)
    model, optimizer, loader_train, loader_eval = accelerator.prepare(
        task.get_trainable_module(), optimizer, loader_train, loader_eval)
    task.use_prepared(model)
    task.attach_optimizer(optimizer)
    updates_per_epoch = math.ceil(len(loader_train) / args.grad_accum_steps)
    # timm's epoch arithmetic: --cooldown-epochs (and --warmup-prefix) lengthen the run
    scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(args, decreasing_metric=args.eval_metric == 'loss'),
        updates_per_epoch=updates_per_epoch)

    # ---- resume ----
    keeper = CheckpointKeeper(output_dir, decreasing=args.eval_metric == 'loss', max_history=args.checkpoint_hist)
    state = TrainState()
    if args.resume:
        state = resume_run(args.resume, task, optimizer, scheduler, keeper, accelerator.process_index,
                           batches_per_epoch=len(loader_train), updates_per_epoch=updates_per_epoch,
                           restore_optimizer=not args.no_resume_opt)
    if args.start_epoch is not None:
        state.epoch = args.start_epoch
    if args.start_epoch is not None and args.sched_on_updates:
        scheduler.step_update(state.epoch * updates_per_epoch)  # as timm's train.py
    elif state.epoch > 0:
        scheduler.step(state.epoch)
    checkpoints = RunCheckpoints(accelerator, keeper, task, optimizer, scheduler, args, class_names)

    output_lock = FolderLock(output_dir, '--output')
    curves = None
    if is_main:
        output_lock.acquire()  # creates the folder; a second run writing there is refused
        # curves.png comes from a child process, which imports matplotlib while this one starts its
        # workers (started once the input is checked: a refused run leaves no child behind)
        curves = CurvesProcess(output_dir / 'curves.png', f'{args.model} on {args.dataset or "images"}')
        remove_stale_temps(output_dir)  # what a killed run was writing
        if not args.resume and skip_log is not None and skip_log.exists():
            skip_log.unlink()  # a fresh run lists only its own skipped images
        (output_dir / 'args.yaml').write_text(args_text)
        _logger.info(
            f'{args.model} on {args.dataset or args.data_dir}: {len(dataset_train)} train / {len(dataset_eval)} eval '
            f'samples, {num_classes} classes, input {tuple(data_config["input_size"])}, {accelerator.num_processes} '
            f'process(es) on {accelerator.device}, method {method["name"]}, lr {args.lr:.3g}, output {output_dir}')
        if variable is not None:
            _logger.info(variable.description)
    trackers.start_trackers(accelerator, args, output_dir)  # after the run folder is held; main process only

    probs_kind = output_activation(criterion)
    # the last evaluated epoch (epochs between --val-interval evaluations have no metrics)
    eval_metrics: Dict[str, Any] = next((r for r in reversed(state.history) if r.get('eval_loss') is not None), {})
    warnings: List[str] = []
    dist_bn = '' if args.sync_bn else args.dist_bn  # timm: SyncBatchNorm keeps the statistics equal already
    last_plot = time.time()  # when curves.png was last drawn
    for epoch in range(state.epoch, num_epochs):
        state.epoch = epoch
        loader_train.set_epoch(epoch)
        train_samples.set_epoch(epoch)
        train_stats = train_one_epoch(state, task, loader_train, optimizer, scheduler, accelerator, args, mixup_fn,
                                      checkpoints, loss_scale=variable and variable.loss_scale,
                                      output_dir=output_dir, normalize=normalize)
        # --dist-bn: every process gets the same BatchNorm statistics (the EMA's too, when it is evaluated)
        if model_setup.distribute_bn_stats(task.get_trainable_module(), dist_bn, accelerator.num_processes) \
                and eval_ema:
            model_setup.distribute_bn_stats(task.get_trainable_module(ema=True), dist_bn, accelerator.num_processes)
        if not model_setup.should_evaluate(epoch, num_epochs, args.val_interval):
            # timm: no evaluation and no checkpoint between --val-interval epochs; the schedule steps without a metric
            scheduler.step(epoch + 1, None)
            state.history.append({'epoch': epoch, **train_stats,
                                  **{f'{task.name}_{k}': v for k, v in task.log_state().items()}})
            trackers.log_epoch(accelerator, state.history[-1])
            if is_main:
                write_epoch_log(output_dir / 'summary.csv', state.history)
                _logger.info(f'epoch {epoch}: train loss {train_stats["train_loss"]:.4f}  (evaluated every '
                             f'{args.val_interval} epochs)')
            continue

        eval_metrics = evaluate(task.get_eval_model(ema=eval_ema), loader_eval, accelerator, real_labels,
                                probs_kind, autocast=accelerator.autocast, channels_last=args.channels_last,
                                tta=args.tta, normalize=normalize)
        task_state = task.log_state()
        state.history.append({
            'epoch': epoch, **train_stats, 'eval_loss': eval_metrics['loss'],
            **{k: eval_metrics.get(k) for k in METRIC_KEYS},
            **{f'{task.name}_{k}': v for k, v in task_state.items()}})
        # curves.png after the last epoch and at most once a minute before it (a drawing takes the
        # curves process ~0.3 s of CPU); it draws while this process saves the checkpoint
        if curves is not None and (epoch == num_epochs - 1 or time.time() - last_plot >= 60):
            curves.draw(state.history)
            last_plot = time.time()
        warnings = collapse_warnings(eval_metrics, task_state, task.name, num_classes, probs_kind)
        if warnings and is_main:
            _logger.warning(f'epoch {epoch}: ' + '; '.join(warnings) + (
                ' (MILe: a shorter student phase --mile-ks or a higher --mile-rho)' if args.mile else ''))
        metric = eval_metrics['loss'] if args.eval_metric == 'loss' else eval_metrics.get(args.eval_metric)
        scheduler.step(epoch + 1, metric)  # timm: this epoch's metric (plateau)
        checkpoints.save_epoch(state, metric)
        trackers.log_epoch(accelerator, state.history[-1])
        if is_main:
            write_epoch_log(output_dir / 'summary.csv', state.history)
            _logger.info(
                f'epoch {epoch}: train loss {train_stats["train_loss"]:.4f}  ' + '  '.join(
                    f'{k} {eval_metrics[k]:.2f}' for k in METRIC_KEYS if eval_metrics.get(k) is not None))
        accelerator.wait_for_everyone()

    # The shipped weights are the best epoch's by --eval-metric; report that epoch's numbers.
    best_row = next((r for r in state.history if r['epoch'] == keeper.best_epoch), None) or eval_metrics
    summary = {
        'metrics': {k: best_row.get(k) for k in METRIC_KEYS},
        'last_metrics': {k: eval_metrics.get(k) for k in METRIC_KEYS},
        'world_size': accelerator.num_processes,
        'eval_samples': eval_metrics.get('eval_samples'),
        'test_size': len(dataset_eval),
        'train_seconds': state.total('epoch_seconds'),
        'train_cpu_seconds': state.total('epoch_cpu_seconds'),
        'epochs': num_epochs,
        'num_updates': state.num_updates,
        'method': method,
        'best': {'metric': args.eval_metric, 'value': keeper.best_metric, 'epoch': keeper.best_epoch},
        'warnings': warnings,
        'skipped_images': read_skip_log(skip_log) if skip_log is not None else [],
        'args': vars(args),
    }
    task_state = task.log_state()
    if task_state:
        summary[task.name] = task_state
    if is_main:
        write_json(output_dir / 'summary.json', summary)
        _save_model_folder(args, output_dir, keeper, timm_model, num_classes,
                           class_names, data_config, summary, method)
        curves.close()  # its last drawing was made while the checkpoint and the model folder were written
        if args.push_to_hub:
            push_model_folder(output_dir, args.push_to_hub, private=args.hub_private)
        print(results_table(summary['metrics'], {
            'train seconds': f'{summary["train_seconds"]:.1f}', 'eval samples': summary['eval_samples'],
            'processes': accelerator.num_processes}))
        print(f'output: {output_dir}')
    accelerator.wait_for_everyone()
    accelerator.end_training()
    output_lock.release()
    return summary


def _save_model_folder(args, output_dir, keeper, model, num_classes, class_names, data_config, summary, method):
    """The Hugging Face model folder (best weights by --eval-metric, EMA when enabled)."""
    best_path = output_dir / 'model_best.pth.tar'
    state_dict = None
    if best_path.is_file():
        ckpt = load_checkpoint_file(best_path)
        # the weights that were evaluated: the EMA's, unless --model-ema-force-cpu (timm: not evaluated)
        use_ema = args.model_ema and not args.model_ema_force_cpu and 'state_dict_ema' in ckpt
        state_dict = ckpt['state_dict_ema'] if use_ema else ckpt['state_dict']
    save_model_folder(
        model, output_dir, model_name=args.model, num_classes=num_classes, label_names=class_names,
        data_config=data_config, metrics=summary['metrics'], method=method,
        dataset=args.dataset or str(args.data_dir), args=summary['args'], state_dict=state_dict,
        repo_id=args.push_to_hub, eval_split=args.val_split)


if __name__ == '__main__':
    main()

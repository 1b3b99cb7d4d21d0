"""MILe under DDP: every rank holds the same teacher, equal to the model at the switch.

Two CPU processes (torch.multiprocessing spawn, gloo) each wrap a tiny model in DDP and train a
MILeTask on DIFFERENT data per rank through teacher -> student -> teacher -> student switches.
At every teacher->student switch the ranks all_gather their teacher's flattened state and its
pseudo-labels on a common probe batch: they must be identical across ranks and equal to the
(DDP-synchronized) model at the switch; during the student phase the teacher must not move.
"""
from __future__ import annotations

import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from timm_multilabel.mile import MILeTask

WORLD_SIZE = 2
KT, KS = 3, 2
NUM_CLASSES = 5


class TinyNet(nn.Module):
    """[B, 3, 8, 8] -> logits [B, NUM_CLASSES]; optional BatchNorm (buffers that see local data)."""

    def __init__(self, bn: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6) if bn else nn.Identity()
        self.head = nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3)))


def _flat_state(module: nn.Module) -> torch.Tensor:
    """Every parameter and floating buffer of ``module``, flattened to float64 [N], in state_dict order."""
    return torch.cat([v.detach().double().flatten() for v in module.state_dict().values() if v.is_floating_point()])


def _gather(t: torch.Tensor) -> list:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def _worker(rank: int, init_file: str, bn: bool, result_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(1234 + rank)  # different init per rank: DDP must broadcast rank 0's weights
        model = TinyNet(bn)
        ddp = DDP(model)
        task = MILeTask(ddp, kt=KT, ks=KS, rho=0.4, verbose=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.2, momentum=0.9)
        data = torch.Generator().manual_seed(100 + rank)  # different data per rank
        probe = torch.Generator().manual_seed(7)
        probe_x = torch.randn(16, 3, 8, 8, generator=probe)  # same on every rank

        teachers = []
        teacher_at_switch = None
        for update in range(2 * (KT + KS)):
            x = torch.randn(8, 3, 8, 8, generator=data) + rank  # ranks see differently distributed data
            y = torch.randint(0, NUM_CLASSES, (8,), generator=data)
            task.train()
            out = task(x, y)
            losses = _gather(out['loss'].detach().reshape(1))
            assert not torch.equal(losses[0], losses[1]), 'ranks were meant to see different data'
            opt.zero_grad()
            out['loss'].backward()
            opt.step()
            switched = task.step()
            if switched and task.phase == 'student':
                teacher_state = _flat_state(task.teacher)
                # the teacher is the model as it was at the switch (the unwrapped model, no 'module.'):
                # its parameters are the local ones (DDP keeps them equal on all ranks); its buffers
                # (BatchNorm statistics, updated by each rank's local data) are rank 0's, as DDP's
                # broadcast_buffers gives the model at its next forward.
                params = torch.cat([p.detach().double().flatten() for p in model.parameters()])
                teacher_params = torch.cat([p.detach().double().flatten() for p in task.teacher.parameters()])
                assert torch.equal(teacher_params, params), f'rank {rank}: teacher weights != model at switch'
                rank0_model_state = _gather(_flat_state(model))[0]
                assert torch.equal(teacher_state, rank0_model_state), \
                    f'rank {rank}: teacher state != (rank 0) model state at switch'
                for other, state in enumerate(_gather(teacher_state)):
                    assert torch.equal(state, teacher_state), \
                        f'rank {rank}: teacher differs from rank {other}\'s (max |diff| ' \
                        f'{(state - teacher_state).abs().max().item():.3g})'
                labels = task.pseudo_labels(probe_x)
                for other, got in enumerate(_gather(labels)):
                    assert torch.equal(got, labels), f'rank {rank}: pseudo-labels differ from rank {other}\'s'
                teacher_at_switch = teacher_state
                teachers.append(teacher_state)
            elif task.phase == 'student':
                # frozen during the student phase while the model trains on
                assert torch.equal(_flat_state(task.teacher), teacher_at_switch), f'rank {rank}: teacher moved'
                assert not torch.equal(_flat_state(model), teacher_at_switch), f'rank {rank}: model did not train'
        assert task.generation == 2 and task.phase == 'teacher', (task.generation, task.phase)
        assert len(teachers) == 2 and not torch.equal(teachers[0], teachers[1])
        torch.save({'teachers': teachers}, os.path.join(result_dir, f'rank{rank}.pt'))
    except BaseException:
        with open(os.path.join(result_dir, f'rank{rank}.err'), 'w') as f:
            f.write(traceback.format_exc())
        raise
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize('bn', [
    False,
    # BatchNorm running statistics are updated by each rank's local batches: the teacher must take
    # rank 0's, or the ranks' teachers (and so their pseudo-labels) drift apart.
    True,
], ids=['no-bn', 'batchnorm'])
def test_ddp_ranks_hold_identical_teachers(tmp_path, bn):
    result_dir = tmp_path / 'results'
    result_dir.mkdir()
    try:
        mp.spawn(_worker, args=(str(tmp_path / 'pg_init'), bn, str(result_dir)), nprocs=WORLD_SIZE, join=True)
    except Exception:
        errors = sorted(result_dir.glob('*.err'))
        msg = '\n'.join(p.read_text().strip().splitlines()[-1] for p in errors)
        pytest.fail(f'worker failed: {msg or "(no message)"}')
    states = [torch.load(result_dir / f'rank{r}.pt', weights_only=True) for r in range(WORLD_SIZE)]
    for a, b in zip(states[0]['teachers'], states[1]['teachers']):
        assert torch.equal(a, b)

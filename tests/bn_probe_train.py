"""train.py with a registered ``bn_probe`` task that saves each rank's BatchNorm statistics, for the
2-process --sync-bn / --dist-bn tests (tests/test_train_model_flags.py).

Run it as train.py with ``--task bn_probe``; ``BN_PROBE_DIR`` names the folder of the files
``rank<i>.pt``: ``before`` (running means and variances at the last optimizer update, before
--dist-bn), ``after`` (at the end of the run), ``norm_types`` and ``broadcast_buffers`` (of the
prepared DDP module; None without DDP).
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from timm_multilabel.registry import register_task  # noqa: E402
from timm_multilabel.task import ClassificationTask  # noqa: E402


def bn_stats(module: torch.nn.Module):
    return {name: buf.detach().clone() for name, buf in module.named_buffers()
            if name.endswith(('running_mean', 'running_var'))}


class BnProbe(ClassificationTask):
    name = 'bn_probe'

    def after_update(self) -> None:
        self._before = bn_stats(self.get_trainable_module())

    def log_state(self):
        module = self.get_trainable_module()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        torch.save({
            'before': getattr(self, '_before', None), 'after': bn_stats(module),
            'norm_types': sorted({type(m).__name__ for m in module.modules()
                                  if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}),
            'broadcast_buffers': getattr(module, 'broadcast_buffers', None),
        }, Path(os.environ['BN_PROBE_DIR']) / f'rank{rank}.pt')
        return {}


@register_task('bn_probe')
def create_bn_probe(model, criterion=None, device=None, **kwargs):
    return BnProbe(model, criterion=criterion, device=device, verbose=False)


if __name__ == '__main__':
    train.main(sys.argv[1:])

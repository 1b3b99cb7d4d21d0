"""SeededSamples: a sample's random augmentation depends on (seed, epoch, index) only."""
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from timm_multilabel.data.seeded import SeededSamples, sample_seed


class RandomDraws(Dataset):
    """Each item draws from the three global generators timm's transforms use."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([i, random.random(), np.random.rand(), torch.rand(()).item()], dtype=torch.float64)


def test_items_depend_on_seed_epoch_and_index_only():
    ds = SeededSamples(RandomDraws(), seed=7)
    first = ds[3]
    for i in (0, 5, 11):  # other loads in between change nothing
        ds[i]
    assert torch.equal(ds[3], first)
    assert not torch.equal(ds[4][1:], first[1:])
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(ds[3][1:], first[1:])
    ds.set_epoch(0)
    assert torch.equal(ds[3], first)
    assert not torch.equal(SeededSamples(RandomDraws(), seed=8)[3][1:], first[1:])


def test_global_generators_are_left_as_they_were():
    ds = SeededSamples(RandomDraws(), seed=1)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    ds[2]
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_batches_are_the_same_for_any_number_of_workers():
    ds = SeededSamples(RandomDraws(), seed=3)
    ds.set_epoch(2)
    # persistent workers keep their copy of the dataset: the epoch must still reach them
    loaders = [DataLoader(ds, batch_size=4, num_workers=n, persistent_workers=n > 0) for n in (0, 2)]
    runs = []
    for loader in loaders:
        ds.set_epoch(2)
        epoch2 = torch.cat(list(loader))
        ds.set_epoch(3)
        epoch3 = torch.cat(list(loader))
        runs.append((epoch2, epoch3))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0][:, 1:], runs[0][1][:, 1:])


def test_sample_seed_spreads_neighbours():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(100)}
    assert len(seeds) == 900 and all(0 <= x < 2 ** 63 for x in seeds)


def test_a_batch_is_drawn_as_its_items_with_one_save_of_the_generators(monkeypatch):
    import timm_multilabel.data.seeded as seeded

    ds = SeededSamples(RandomDraws(), seed=5)
    ds.set_epoch(1)
    one_by_one = [ds[i] for i in (7, 2, 7, 11)]
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    batch = ds.__getitems__([7, 2, 7, 11])
    assert all(torch.equal(a, b) for a, b in zip(batch, one_by_one)) and len(batch) == 4
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected  # restored after the batch
    # the DataLoader fetches whole batches this way: 3 batches, 3 saves (12 with one per item)
    saves = []
    kept = seeded._global_generators_kept
    monkeypatch.setattr(seeded, '_global_generators_kept', lambda: saves.append(1) or kept())
    batches = torch.cat(list(DataLoader(ds, batch_size=4)))
    assert len(saves) == 3
    assert torch.equal(batches, torch.stack([ds[i] for i in range(12)]))

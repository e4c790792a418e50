"""Seeded, resumable training order, with examples of similar length batched together; a seed for each example's
augmentation; seeded subsets."""

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import Sampler


class GroupedShuffleSampler(Sampler[int]):
    """Seeded shuffle whose consecutive `batch_size` chunks hold examples of similar length.

    Padding to the longest example of a batch then costs little. The order depends only on
    (seed, epoch), so a resumed run sees the same batches; accelerate's `set_epoch` reaches it.
    """

    def __init__(self, lengths: list[int] | None, batch_size: int, seed: int, num_examples: int,
                 mega_batches: int = 50):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.num_examples = num_examples
        self.mega_batch_size = batch_size * mega_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        if self.lengths is None:
            yield from order
            return
        # Sort each mega-batch by length, cut it into batches, then shuffle the batches (a partial one goes last
        # so the batch boundaries stay where the DataLoader cuts).
        batches = []
        for start in range(0, len(order), self.mega_batch_size):
            mega = sorted(order[start:start + self.mega_batch_size], key=self.lengths.__getitem__, reverse=True)
            batches.extend(mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size))
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]
        shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        for batch in shuffled + partial:
            yield from batch


def example_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one example's augmentation in one epoch.

    Derived, never drawn from a running generator, so nothing needs saving: DataLoader workers, a resumed run and
    any number of processes all draw the same augmentation for the same example (each index is on one process).
    """
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochKeys(Sampler[tuple[int, int]]):
    """Wraps a training sampler to yield (epoch, index) keys for `SeededExamples`."""

    def __init__(self, sampler: Sampler[int]):
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # accelerate calls it at the start of each epoch
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return ((self.epoch, index) for index in self.sampler)


class SeededExamples(torch.utils.data.Dataset):
    """A training split read with `EpochKeys`: each example comes with `augment_seed`, its own augmentation seed."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        return {**self.dataset[index], "augment_seed": example_seed(self.seed, epoch, index)}


def data_order(read_order: Iterable[int]) -> np.ndarray:
    """Where rows 0, 1, 2... of the data set sit among rows read in `read_order`: indexing the rows read with it
    puts them back in the data set's order."""
    read_order = np.fromiter(read_order, dtype=np.int64)
    positions = np.empty_like(read_order)
    positions[read_order] = np.arange(len(read_order))
    return positions


class LengthSortedSampler(Sampler[int]):
    """Evaluation order, longest example first: each batch pads little, whatever its size.

    Scores don't depend on the order (references travel with their batches), but with a group-norm feature encoder
    (wav2vec2-base) padding changes them a little, so less of it keeps them close to one example at a time.
    """

    def __init__(self, lengths: list[int]):
        self.order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep the data's order

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)


def stratified_sample(labels: list[int], count: int, seed: int) -> list[int]:
    """`count` indices (sorted) in which each class keeps its share of `labels`, and every class at least one
    example when `count` allows: the first rows of a file sorted by class would hold only its first classes."""
    labels = np.asarray(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    shares = count * sizes / len(labels)
    quotas = np.floor(shares).astype(int)
    for i in np.argsort(quotas - shares, kind="stable")[:count - quotas.sum()]:  # largest remainders first
        quotas[i] += 1
    while count >= len(classes) and (quotas == 0).any():  # a rare class gets one from the largest quota
        quotas[np.argmax(quotas)] -= 1
        quotas[np.flatnonzero(quotas == 0)[0]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=quota, replace=False)
              for label, quota in zip(classes, quotas)]
    return sorted(np.concatenate(chosen).tolist())


def random_sample(size: int, count: int, seed: int) -> list[int]:
    """`count` of `range(size)`, seeded, in their original order."""
    return sorted(np.random.default_rng(seed).choice(size, size=count, replace=False).tolist())

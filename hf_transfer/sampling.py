"""Seeded, resumable training order, with examples of similar length batched together."""

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

"""Clean data as ``(float image in [0, 1], label, sample_id)`` items: the in-memory dataset, what the manifest
records about the data, and the batch iterator that skips unreadable samples. :mod:`robustart.data` re-exports
these names with the dataset readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class DatasetInfo:
    """What the manifest records about the clean data."""

    name: str
    split: str
    root: str
    num_samples: int
    num_classes: int
    in_chans: int
    notes: list[str] = field(default_factory=list)
    #: for sets labelled in a subset of ImageNet-1k (ImageNet-A, -O, -R): the 1k output columns kept, in
    #: label order; ``num_classes`` is then the model's (1000) and labels index this list
    class_mask: list[int] | None = None
    #: for sets scored as a few categories of ImageNet-1k (cue-conflict's 16): each category's 1k output
    #: columns, whose mean probability is the category's; ``num_classes`` is then the model's (1000) and labels
    #: index the categories in this order
    class_groups: dict[str, list[int]] | None = None
    #: the class names in label order, where the data names its classes (class folders, CIFAR, Fashion-MNIST)
    classes: list[str] | None = None


class TensorDataset(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with labels; items are float images in [0, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, sample_ids: torch.Tensor | None = None):
        self.images, self.labels = images, labels
        self.sample_ids = torch.arange(len(images)) if sample_ids is None else sample_ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float() / 255, self.labels[i], self.sample_ids[i]  # not in place: float images stay

    def subset(self, n: int) -> TensorDataset:
        return TensorDataset(self.images[:n], self.labels[:n], self.sample_ids[:n])


class SkipCounter:
    """Collate function that drops unreadable samples (``None``) and counts them."""

    def __init__(self) -> None:
        self.skipped = 0

    def __call__(self, batch):
        from torch.utils.data import default_collate

        kept = [b for b in batch if b is not None]
        return default_collate(kept) if kept else None, len(batch) - len(kept)


def iterate(dataset: Dataset, batch_size: int, num_workers: int = 0, counter: SkipCounter | None = None):
    """Yield ``(images, labels, sample_ids)`` batches in dataset order, skipping unreadable samples."""
    counter = counter or SkipCounter()
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=counter,
        pin_memory=torch.cuda.is_available(),
    )
    for batch, skipped in loader:
        counter.skipped += skipped
        if batch is not None:
            yield tuple(batch)

"""Mini-batch order, shared by image and token batches so both shuffle alike."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def batch_indices(count: int, batch_size: int, shuffle: bool, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Row indices of each mini-batch: in ``generator``'s random order when shuffling, else in order."""
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    return (order[start : start + batch_size] for start in range(0, count, batch_size))

"""Every random draw in fedhei comes from a named stream of this module.

A stream is named by the scenario seed, a purpose ("sample-train", "client",
"partition", ...) and the integers that place it (round, client id, layer index).
Two streams with different names are independent, and a stream's draws do not
depend on what else ran before it, in which process or in which order: that is
what lets a rerun, a resumed run or another strategy of a bench draw exactly the
same numbers whatever order Ray runs the clients in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def _purpose_key(purpose: str) -> int:
    """A stable 32-bit key for a purpose name (Python's own hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")


def _sequence(seed: int, purpose: str, ids: tuple[int, ...]) -> np.random.SeedSequence:
    if any(int(value) < 0 for value in (seed, *ids)):
        raise ValueError(f"stream ids must be non-negative: seed {seed}, {purpose}, {ids}")
    return np.random.SeedSequence([int(seed), _purpose_key(purpose), *(int(value) for value in ids)])


def seed_for(seed: int, purpose: str, *ids: int) -> int:
    """A 63-bit integer seed for APIs that take one (scikit-learn, torch.manual_seed)."""
    return int(_sequence(seed, purpose, ids).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def rng(seed: int, purpose: str, *ids: int) -> np.random.Generator:
    """A NumPy generator on the named stream."""
    return np.random.default_rng(_sequence(seed, purpose, ids))


def torch_generator(seed: int, purpose: str, *ids: int) -> torch.Generator:
    """A CPU torch generator on the named stream."""
    return torch.Generator().manual_seed(seed_for(seed, purpose, *ids))


@contextmanager
def torch_seeded(seed: int, purpose: str, *ids: int) -> Iterator[None]:
    """Run a block on the named stream of torch's global generator, then restore it.

    For code that draws from the global generator and takes no generator argument
    (a model's weight initialization, for one).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_for(seed, purpose, *ids))
        yield


@contextmanager
def all_seeded(seed: int, purpose: str, *ids: int) -> Iterator[None]:
    """Run a block with torch's, NumPy's and Python's global generators on the named stream, then restore them.

    For library code that draws from all three and takes no generator (timm's
    Mixup and RandAugment use NumPy's and Python's ``random``).
    """
    sequence = _sequence(seed, purpose, ids)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(sequence.generate_state(4))
    random.seed(int(sequence.generate_state(2, dtype=np.uint64)[1]))
    try:
        with torch_seeded(seed, purpose, *ids):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)

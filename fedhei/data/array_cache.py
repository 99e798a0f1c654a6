"""Cache files of plain arrays (a decoded data set, a split): read back without a pickle, written atomically."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedhei import atomic


def read_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The named arrays of a cache file; None when it is absent or damaged, and a damaged one is removed,
    so that the caller rebuilds it."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in names}
    except (OSError, ValueError, KeyError, zlib.error):
        path.unlink(missing_ok=True)
        return None


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write a cache file of plain arrays atomically, so a reader never sees half of one."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    atomic.write_with(path, save)

"""Atomic file writes: a reader sees the old file or the whole new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedhei.errors import FedheiError


@contextmanager
def atomic_path(target: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The temporary file lives in the same directory so the final ``os.replace`` is a
    rename on one file system, and it is removed if the writer raises.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as error:
        raise FedheiError(f"cannot write {target} ({error.strerror or error}); choose a writable path") from error
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(target: Path | str, writer: Callable[[Path], object], suffix: str = "") -> None:
    """Let ``writer`` fill a temporary file, then move it into place atomically."""
    with atomic_path(target, suffix) as tmp:
        writer(tmp)


def write_text(target: Path | str, text: str) -> None:
    write_with(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(target: Path | str, payload: Any) -> None:
    write_text(target, json.dumps(payload, indent=2, sort_keys=False) + "\n")

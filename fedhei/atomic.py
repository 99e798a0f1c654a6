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


def check_writable(directory: Path, what: str, named: Path | None = None) -> None:
    """Refuse a directory that cannot be created or written in, before any work, leaving nothing behind.

    Permission bits do not tell (root passes them, yet /sys or a read-only mount refuses
    it), so a throwaway folder is made and removed in the nearest existing ancestor. The
    message names ``named`` (a file to go in ``directory``) when given.
    """
    named = named or directory
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise FedheiError(f"cannot write the {what} {named} ({existing} is not a folder); choose a writable path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fedhei-write-check-", dir=existing))
    except OSError as error:
        raise FedheiError(f"cannot write the {what} {named} (cannot create anything in {existing}: "
                          f"{error.strerror or error}); choose a writable path") from error


def check_writable_file(path: Path, what: str) -> None:
    """Refuse a file that could not be written (its folder, or a folder in its place), before any work."""
    if path.is_dir():
        raise FedheiError(f"cannot write the {what} {path}: it is a folder; give a file name")
    check_writable(path.parent, what, named=path)


def write_with(target: Path | str, writer: Callable[[Path], object], suffix: str = "") -> None:
    """Let ``writer`` fill a temporary file, then move it into place atomically."""
    with atomic_path(target, suffix) as tmp:
        writer(tmp)


def write_text(target: Path | str, text: str) -> None:
    write_with(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(target: Path | str, payload: Any) -> None:
    write_text(target, json.dumps(payload, indent=2, sort_keys=False) + "\n")

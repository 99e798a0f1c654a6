"""The one stderr console and the progress bar of long loops, at the bottom of the core so that pre-training,
compression and the federation's progress display all draw on the same screen, and piped output stays clean."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, soft_wrap=True)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich progress bar that disappears on a non-terminal (CI logs get no spinner noise)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as progress:
        yield progress

"""One progress display for every long loop, on stderr so piped output stays clean."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhei.reporting.results import human_bytes

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


class RoundObserver(Protocol):
    """What a federation tells the screen as it goes (the server calls these, in order)."""

    def round_started(self, server_round: int, num_rounds: int, sampled: int) -> None: ...

    def reply_received(self) -> None: ...

    def round_finished(self, record: Any, num_rounds: int, seconds: float) -> None: ...

    def export_started(self, clients: int) -> None: ...


class RoundLines:
    """One plain line per round, tagged with the strategy's name; silent when ``quiet``."""

    def __init__(self, strategy: str, quiet: bool = False) -> None:
        self.strategy = strategy
        self.quiet = quiet

    def round_started(self, server_round: int, num_rounds: int, sampled: int) -> None:
        return None

    def reply_received(self) -> None:
        return None

    def round_finished(self, record: Any, num_rounds: int, seconds: float) -> None:
        if not self.quiet:
            console.print(round_line(self.strategy, record, num_rounds, seconds), markup=False, highlight=False)

    def export_started(self, clients: int) -> None:
        if not self.quiet:
            console.print(f"{self.strategy} final: every client's last local round, evaluation and export ({clients} clients)",
                          markup=False, highlight=False)


def round_line(strategy: str, record: Any, num_rounds: int, seconds: float) -> str:
    """``fedhei round 2/3: 4/4 updates, ...``: what a round did, in one line."""
    failed = record.failed("train")
    kinds = Counter(failure["kind"] for failure in failed)
    failures = f", {len(failed)} failed ({', '.join(f'{kind} {count}' for kind, count in sorted(kinds.items()))})" if failed else ""
    accuracy = record.evaluate.get("accuracy-mean")
    evaluation = (f", mean client acc {100 * accuracy:.1f}% on {len(record.evaluated)} clients' test splits"
                  if accuracy is not None else "")
    return (f"{strategy} round {record.round}/{num_rounds}: {len(record.aggregated)}/{len(record.sampled)} updates{failures}"
            f"{evaluation}, up {human_bytes(record.bytes_up)}, down {human_bytes(record.bytes_down)}, {seconds:.1f} s")

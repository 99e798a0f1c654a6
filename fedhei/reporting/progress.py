"""The federation's progress display, on the one stderr console (:mod:`fedhei.terminal`).

A federation reports through a :class:`RoundObserver`. On a terminal, :class:`LiveRounds`
shows a live bar per run (round i of N, clients done in this round, elapsed time and
time left) above which each finished round leaves its line; otherwise
:class:`RoundLines` prints that line alone, one per round, as a log wants it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhei.reporting.results import human_bytes
from fedhei.terminal import console


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


class LiveRounds:
    """One run's bar in a shared live display: its rounds and the final export as one task.

    The task counts the rounds plus one for the export; each reply moves it by its share
    of the round, so the time left follows the pace so far.
    """

    def __init__(self, label: str, progress: Progress, display: ProgressDisplay) -> None:
        self.label = label
        self.progress = progress
        self.display = display
        self.task: TaskID | None = None
        self.stage = ""
        self.expected = 0
        self.done = 0
        self.before = 0
        self.total = 1

    def _begin(self, stage: str, before: int, total: int, clients: int) -> None:
        """A new round (or the export): ``before`` steps of ``total`` are behind, ``clients`` replies are awaited."""
        if self.task is None:
            self.display.run_started(self)
            self.task = self.progress.add_task(self.label, total=total, status="")
        self.stage, self.before, self.total, self.expected, self.done = stage, before, total, clients, 0
        self._show()

    def _show(self) -> None:
        assert self.task is not None
        share = self.done / self.expected if self.expected else 0.0
        self.progress.update(self.task, description=f"{self.label} {self.stage}", completed=self.before + share,
                             status=f"{self.done}/{self.expected} clients")

    def round_started(self, server_round: int, num_rounds: int, sampled: int) -> None:
        self._begin(f"round {server_round}/{num_rounds}", server_round - 1, num_rounds + 1, sampled)

    def reply_received(self) -> None:
        self.done += 1
        self._show()

    def round_finished(self, record: Any, num_rounds: int, seconds: float) -> None:
        self.progress.console.print(round_line(self.label, record, num_rounds, seconds), markup=False, highlight=False)

    def export_started(self, clients: int) -> None:
        self._begin("final local round and export", self.total - 1, self.total, clients)

    def finish(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


class ProgressDisplay:
    """The progress of a batch of runs: a live display on a terminal, plain lines elsewhere, nothing when quiet.

    Used as a context manager around the simulation, so a live display always stops,
    whatever happens to the runs.
    """

    def __init__(self, runs: int, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.runs = runs
        self.started = 0
        self.current: LiveRounds | None = None
        self.progress = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            TextColumn("{task.fields[status]}", markup=False),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=console,
            disable=not self.live,
        )
        self.overall: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self.progress.start()
            if self.runs > 1:
                self.overall = self.progress.add_task(f"runs 0/{self.runs}", total=self.runs, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def observer(self, label: str) -> RoundObserver:
        if self.live:
            return LiveRounds(label, self.progress, self)
        return RoundLines(label, quiet=self.quiet)

    def run_started(self, run: LiveRounds) -> None:
        """A new run ends the previous one's bar (its rounds stay printed above) and moves the overall count."""
        if self.current is not None:
            self.current.finish()
        self.current = run
        self.started += 1
        if self.overall is not None:
            self.progress.update(self.overall, completed=self.started - 1, description=f"runs {self.started}/{self.runs}")


def round_line(strategy: str, record: Any, num_rounds: int, seconds: float) -> str:
    """``fedhei round 2/3: 4/4 updates, ...``: what a round did, in one line."""
    failed = record.failed("train")
    kinds = Counter(failure["kind"] for failure in failed)
    failures = f", {len(failed)} failed ({', '.join(f'{kind} {count}' for kind, count in sorted(kinds.items()))})" if failed else ""
    accuracy = record.evaluate.get("accuracy-mean")
    perplexity = record.evaluate.get("perplexity-mean")
    evaluation = (f", mean client acc {100 * accuracy:.1f}%"
                  + (f" (next token), perplexity {perplexity:.2f}" if perplexity is not None else "")
                  + f" on {len(record.evaluated)} clients' test splits" if accuracy is not None else "")
    shared = record.global_eval.get("global-accuracy")
    global_text = f", global model {100 * shared:.1f}% on the test set" if shared is not None else ""
    return (f"{strategy} round {record.round}/{num_rounds}: {len(record.aggregated)}/{len(record.sampled)} updates{failures}"
            f"{evaluation}{global_text}, up {human_bytes(record.bytes_up)}, down {human_bytes(record.bytes_down)}, {seconds:.1f} s")

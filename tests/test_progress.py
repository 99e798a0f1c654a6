"""Progress: a live bar per run on a terminal, one plain line per round elsewhere, nothing when quiet."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fedhei.reporting import progress
from fedhei.reporting.progress import LiveRounds, ProgressDisplay, RoundLines
from strategies.base import RoundLog


def _record() -> RoundLog:
    record = RoundLog(1, sampled=[0, 2, 3], aggregated=[0, 2], evaluated=[0, 1, 2, 3], bytes_up=2048, bytes_down=4096,
                      evaluate={"accuracy-mean": 0.5})
    record.fail(3, "train", "crash", "disk full")
    return record


def _play_round(observer) -> None:
    """Round 1 of 2: three clients sampled, one answers, the round ends."""
    observer.round_started(1, 2, 3)
    observer.reply_received()
    observer.round_finished(_record(), 2, 1.5)


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch):
    def make(terminal: bool) -> io.StringIO:
        buffer = io.StringIO()
        monkeypatch.setattr(progress, "console", Console(file=buffer, force_terminal=terminal, width=200))
        return buffer

    return make


def test_a_terminal_gets_a_live_bar_with_round_clients_and_time(screen) -> None:
    buffer = screen(terminal=True)
    with ProgressDisplay(runs=1) as display:
        observer = display.observer("fedhei seed 1")
        assert isinstance(observer, LiveRounds)
        observer.round_started(1, 2, 3)
        observer.reply_received()
        observer.reply_received()
        (task,) = display.progress.tasks
        assert (task.description, task.fields["status"], task.completed, task.total) == ("fedhei seed 1 round 1/2", "2/3 clients",
                                                                                        pytest.approx(2 / 3), 3)
        observer.round_finished(_record(), 2, 1.5)
        observer.export_started(4)
        (task,) = display.progress.tasks
        assert (task.description, task.completed) == ("fedhei seed 1 final local round and export", 2)
    shown = buffer.getvalue()
    assert "fedhei seed 1 round 1/2: 2/3 updates, 1 failed (crash 1), mean client acc 50.0%" in shown
    assert "elapsed" in shown and "left" in shown


def test_a_batch_shows_its_runs_and_the_next_run_replaces_the_last_ones_bar(screen) -> None:
    screen(terminal=True)
    with ProgressDisplay(runs=2) as display:
        first, second = display.observer("fedhei seed 0"), display.observer("local seed 0")
        first.round_started(1, 1, 2)
        second.round_started(1, 1, 2)
        descriptions = [task.description for task in display.progress.tasks]
    assert descriptions == ["runs 2/2", "local seed 0 round 1/1"]


def test_elsewhere_one_plain_line_per_round_and_nothing_when_quiet(screen) -> None:
    buffer = screen(terminal=False)
    with ProgressDisplay(runs=1) as display:
        assert isinstance(display.observer("fedhei"), RoundLines)
        _play_round(display.observer("fedhei"))
    assert buffer.getvalue().splitlines() == [
        "fedhei round 1/2: 2/3 updates, 1 failed (crash 1), mean client acc 50.0% on 4 clients' test splits, up 2.00 KB, "
        "down 4.00 KB, 1.5 s"]
    quiet = screen(terminal=True)
    with ProgressDisplay(runs=1, quiet=True) as display:
        observer = display.observer("fedhei")
        _play_round(observer)
        observer.export_started(4)
    assert quiet.getvalue() == ""

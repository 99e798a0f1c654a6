"""Several runs side by side: strategies and seeds, each figure with its interval, and paired differences.

A comparison groups runs by strategy; within a strategy, by seed. Strategies are
compared client by client: the same client of the same seed (same data, same sampled
rounds) under two strategies, so that the difference is not drowned by how different
the clients are from each other. Intervals come from :mod:`fedhei.reporting.intervals`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fedhei.errors import FedheiError
from fedhei.reporting.intervals import RESAMPLES, Interval, Statistic, bootstrap, mean, worst_decile
from fedhei.reporting.results import COMPLETE, METRIC_NAMES, RESULTS_FILE, headline_metric, human_bytes


@dataclass(frozen=True)
class Run:
    """One run directory: its results.json and, where the clients wrote them there, their manifests."""

    path: Path
    payload: dict[str, Any] = field(repr=False)

    @property
    def strategy(self) -> str:
        return str(self.payload["strategy"])

    @property
    def seed(self) -> int:
        return int(self.payload["scenario"]["seed"])

    @property
    def clients(self) -> list[dict[str, float]]:
        return list(self.payload["clients"])

    @cached_property
    def manifests(self) -> dict[int, dict[str, Any]]:
        """Client id -> manifest.json (empty where the clients exported on other machines)."""
        found = {}
        for path in sorted((self.path / "clients").glob("*/manifest.json")):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            found[int(manifest["client"])] = manifest
        return found

    def values(self, key: str) -> np.ndarray:
        """``key`` of every client's final row, in client order."""
        return np.array([float(client[key]) for client in self.clients if key in client], dtype=np.float64)


def load_run(path: Path) -> Run:
    try:
        payload = json.loads((path / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FedheiError(f"cannot read {path / RESULTS_FILE} ({error}); give a run directory that fedhei wrote") from error
    return Run(path, payload)


def find_runs(paths: Sequence[Path]) -> list[Run]:
    """The runs under each path: the path itself if it holds results.json, else every run below it."""
    runs = []
    for path in paths:
        if (path / RESULTS_FILE).is_file():
            runs.append(load_run(path))
            continue
        found = sorted(result.parent for result in path.rglob(RESULTS_FILE)) if path.is_dir() else []
        if not found:
            raise FedheiError(f"{path} holds no {RESULTS_FILE}, nor does any folder below it; give a run, seed or bench "
                              "directory")
        runs.extend(load_run(folder) for folder in found)
    seen: dict[tuple[str, int], Path] = {}
    for run in runs:
        if (run.strategy, run.seed) in seen:
            raise FedheiError(f"{run.path} and {seen[run.strategy, run.seed]} are both {run.strategy} with seed {run.seed}; "
                              "compare runs of different strategies or seeds")
        seen[run.strategy, run.seed] = run.path
    return runs


def by_strategy(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Strategies in the order they first appear, each with its runs by seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.strategy, []).append(run)
    return {name: sorted(group, key=lambda run: run.seed) for name, group in groups.items()}


def comparison_metric(runs: Sequence[Run]) -> str:
    """The weighted full-test-set accuracy when every run has it, else the sampled split's."""
    return headline_metric([client for run in runs for client in run.clients])


@dataclass(frozen=True)
class StrategyFigures:
    strategy: str
    seeds: list[int]
    accuracy: Interval | None
    worst_decile: Interval | None
    split_accuracy: Interval | None
    compression: Interval | None
    bytes_up: Interval
    bytes_down: Interval


@dataclass(frozen=True)
class PairedDifference:
    strategy: str
    reference: str
    difference: Interval


def _per_client(group: Sequence[Run], key: str, statistic: Statistic) -> Interval | None:
    values = [run.values(key) for run in group]
    return bootstrap([v for v in values if v.size], statistic) if any(v.size for v in values) else None


def strategy_figures(runs: Sequence[Run], metric: str) -> list[StrategyFigures]:
    """Each strategy's mean and worst-decile accuracy, compression and bytes, each over its seeds."""
    rows = []
    for name, group in by_strategy(runs).items():
        rows.append(StrategyFigures(
            strategy=name,
            seeds=[run.seed for run in group],
            accuracy=_per_client(group, metric, mean),
            worst_decile=_per_client(group, metric, worst_decile),
            split_accuracy=_per_client(group, "accuracy", mean),
            compression=_per_client(group, "compression", mean),
            bytes_up=bootstrap([[run.payload["summary"]["bytes-up-per-round"]] for run in group]),
            bytes_down=bootstrap([[run.payload["summary"]["bytes-down-per-round"]] for run in group]),
        ))
    return rows


def paired_differences(runs: Sequence[Run], metric: str, references: Sequence[str]) -> list[PairedDifference]:
    """Every strategy minus each reference it shares seeds with, client by client."""
    groups = by_strategy(runs)
    rows = []
    for reference in (name for name in references if name in groups):
        baseline = {run.seed: run for run in groups[reference]}
        for name, group in groups.items():
            if name == reference:
                continue
            differences = [_client_differences(run, baseline[run.seed], metric) for run in group if run.seed in baseline]
            differences = [d for d in differences if d.size]
            if differences:
                rows.append(PairedDifference(name, reference, bootstrap(differences)))
    return rows


def _client_differences(run: Run, reference: Run, metric: str) -> np.ndarray:
    """Run minus reference on each client both have a final figure for."""
    ours = {int(c["client-id"]): float(c[metric]) for c in run.clients if metric in c}
    theirs = {int(c["client-id"]): float(c[metric]) for c in reference.clients if metric in c}
    return np.array([ours[client] - theirs[client] for client in sorted(ours.keys() & theirs.keys())], dtype=np.float64)


def _pct(interval: Interval | None) -> str:
    if interval is None:
        return "n/a"
    return f"{100 * interval.estimate:.1f}% [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _points(interval: Interval) -> str:
    return f"{100 * interval.estimate:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"


def _bytes(interval: Interval) -> str:
    if interval.low == interval.high:
        return human_bytes(interval.estimate)
    return f"{human_bytes(interval.estimate)} [{human_bytes(interval.low)}, {human_bytes(interval.high)}]"


def comparison_tables(runs: Sequence[Run], references: Sequence[str]) -> str:
    """The markdown of a comparison: every strategy with intervals, then the paired differences."""
    metric = comparison_metric(runs)
    figures = strategy_figures(runs, metric)
    seeds = sorted({run.seed for run in runs})
    lines = [
        f"Accuracy: {METRIC_NAMES[metric]}"
        + (" (lower variance than the clients' sampled test splits, whose mean is shown beside it)."
           if metric != "accuracy" else "."),
        f"Each figure is the mean over seeds ({', '.join(map(str, seeds))}) of each run's figure, with its 95% bootstrap "
        f"interval in brackets: {RESAMPLES:,} seeded resamples of the seeds, then of the clients within each drawn seed "
        "(bytes per round: of the seeds only).",
        "",
        "| strategy | seeds | mean acc | worst-decile acc | mean acc, own splits | compression | bytes up / round "
        "| bytes down / round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in figures:
        lines.append(
            f"| {row.strategy} | {len(row.seeds)} | {_pct(row.accuracy)} | {_pct(row.worst_decile)} | {_pct(row.split_accuracy)} "
            f"| {_pct(row.compression)} | {_bytes(row.bytes_up)} | {_bytes(row.bytes_down)} |"
        )
    if len(figures) > 1:
        lines += ["", *_paired_section(runs, metric, references)]
    partial = [run for run in runs if run.payload["status"] != COMPLETE]
    if partial:
        lines += ["", "Partial runs (their figures cover the clients they have): "
                  + ", ".join(f"{run.strategy} seed {run.seed} ({run.payload['stopped']['reason']})" for run in partial)]
    return "\n".join(lines) + "\n"


def _paired_section(runs: Sequence[Run], metric: str, references: Sequence[str]) -> list[str]:
    pairs = paired_differences(runs, metric, references)
    lines = ["## Paired differences", ""]
    present = [name for name in references if name in {run.strategy for run in runs}]
    missing = [name for name in references if name not in present]
    if present:
        lines += [
            "Final accuracy of each strategy minus the reference's on the same client of the same seed, in points, "
            "with its 95% bootstrap interval (the same two-stage resampling over seeds and clients). "
            "Better or worse only when the interval excludes 0; otherwise the difference is not resolved.",
            "",
            "| strategy | reference | mean difference (points) | verdict | pairs |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [f"| {pair.strategy} | {pair.reference} | {_points(pair.difference)} | {pair.difference.verdict()} "
                  f"| {pair.difference.units} clients over {pair.difference.groups} seed{'s' if pair.difference.groups > 1 else ''} |"
                  for pair in pairs]
    if missing:
        lines += ["", f"No comparison against {', '.join(missing)}: not among the compared strategies "
                      "(compare-to names the references; add them to the bench to compare against them)."]
    return lines


def run_list(runs: Sequence[Run], relative_to: Path) -> str:
    """Where each run of a comparison lives, with its own report."""
    lines = ["| strategy | seed | status | run |", "| --- | --- | --- | --- |"]
    for name, group in by_strategy(runs).items():
        for run in group:
            where = _relative(run.path, relative_to)
            lines.append(f"| {name} | {run.seed} | {run.payload['status']} | [{where}]({where}/report.md) |")
    return "\n".join(lines) + "\n"


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def per_seed(runs: Sequence[Run], pick: Callable[[Run], Any]) -> Mapping[int, Any]:
    """One value per seed (the first run's of that seed): what all strategies of a seed share, e.g. its partition."""
    found: dict[int, Any] = {}
    for run in sorted(runs, key=lambda run: run.seed):
        found.setdefault(run.seed, pick(run))
    return found

"""The Flower ServerApp: pick the strategy, run the rounds, collect every user's final model.

``flwr run .`` reads the scenario from the run config; ``fedhei run`` and ``fedhei
bench`` build the same app in-process with :func:`server_app_for`, so both paths go
through :func:`run_federation`. One app may run several federations in turn on the
same nodes (the seeds of a scenario, the strategies of a bench): the clients take
everything, seed included, from each message, so the simulation starts only once.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedhei import atomic
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import CLASSES, load_cifar10_cached
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError, RunFailed
from fedhei.experiments.layout import seed_runs, state_root
from fedhei.federation.server import scenario_base_model
from fedhei.reporting.comparison import load_run
from fedhei.reporting.csvs import CLIENTS_CSV, ROUNDS_CSV
from fedhei.reporting.figures import FIGURES_DIR
from fedhei.reporting.progress import RoundObserver
from fedhei.reporting.report import REPORT_FILE, write_comparison, write_run
from fedhei.reporting.results import RESULTS_FILE, TIMINGS_FILE, build_payload, partition_record, topic_record
from strategies import resolve_strategy
from strategies.base import PersonalizedStrategy
from strategies.checkpoint import CHECKPOINT_FILE, ServerCheckpoint
from strategies.directory import stop_waiting_when

log = logging.getLogger(__name__)
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _fresh_run_dir(scenario: Scenario, run_dir: Path) -> None:
    """Remove what an earlier run into this directory left that this run would not overwrite.

    Only fedhei's own files go: the results, the checkpoint, and client state folders
    named by a run token; anything else in the directory stays.
    """
    for name in (RESULTS_FILE, TIMINGS_FILE, REPORT_FILE, ROUNDS_CSV, CLIENTS_CSV, CHECKPOINT_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / FIGURES_DIR, ignore_errors=True)
    root = state_root(scenario, run_dir)
    if root.is_dir():
        for stale in root.iterdir():
            if stale.is_dir() and _TOKEN.fullmatch(stale.name):
                shutil.rmtree(stale, ignore_errors=True)


def earlier_run(run_dirs: Iterable[Path]) -> str | None:
    """Which of ``run_dirs`` already holds a run, in words (the first one); None when none does.

    A run there is its results.json (complete or partial), its checkpoint (killed mid-run)
    or its report (a bench's or a comparison's folder): a new run would replace them
    (:func:`_fresh_run_dir`), so every door refuses such a directory unless told to overwrite.
    """
    for run_dir in run_dirs:
        results = run_dir / RESULTS_FILE
        if results.is_file():
            try:
                status = f", status {json.loads(results.read_text(encoding='utf-8'))['status']}"
            except (OSError, ValueError, KeyError, TypeError):
                status = ""
            return f"{run_dir} holds an earlier run ({RESULTS_FILE}{status})"
        for name in (CHECKPOINT_FILE, REPORT_FILE):
            if (run_dir / name).is_file():
                return f"{run_dir} holds an earlier run ({name})"
    return None


def _start(scenario: Scenario, run_dir: Path, resume: bool, observer: RoundObserver | None) -> tuple[PersonalizedStrategy, ArrayRecord]:
    """A strategy ready for its next round, and the global arrays it starts from."""
    strategy_class = resolve_strategy(scenario.strategy)
    if resume:
        checkpoint = ServerCheckpoint.load(run_dir)
        checkpoint.check_scenario(scenario.to_mapping())
        strategy = strategy_class(scenario, str(run_dir), checkpoint.run_token, observer)
        strategy.load_state_dict(checkpoint.strategy_state, checkpoint.completed_round, checkpoint.optimizer)
        return strategy, ArrayRecord({name: Array(value) for name, value in checkpoint.arrays.items()})
    _fresh_run_dir(scenario, run_dir)
    model = scenario_base_model(scenario)
    initial = ArrayRecord({name: Array(value.detach().cpu().numpy()) for name, value in model.named_parameters()})
    return strategy_class(scenario, str(run_dir), uuid.uuid4().hex, observer), initial


def run_federation(grid: Grid, scenario: Scenario, run_dir: Path, resume: bool = False,
                   observer: RoundObserver | None = None, in_flight: int | None = None) -> dict[str, Any]:
    """Run every round (from the checkpoint when resuming), then the final per-client export, with at
    most ``in_flight`` messages waiting at once in the roll call and the export (all when None).

    Writes results.json and report.md whatever happens: complete, or partial with the
    completed rounds and why the run stopped (then :class:`RunFailed` propagates).
    """
    run_dir = run_dir.resolve()
    strategy, arrays = _start(scenario, run_dir, resume, observer)
    strategy.in_flight = in_flight
    try:
        result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=scenario.num_server_rounds)
        clients, export_failures = strategy.finalize(grid, result.arrays)
    except RunFailed as failure:
        _write(run_dir, strategy, clients=[], export_failures=[], stopped={"round": failure.stopped_round, "reason": str(failure)})
        raise RunFailed(f"{failure}; the completed rounds are in {run_dir / RESULTS_FILE} (status partial)") from failure
    if export_failures:
        missing = [failure["client"] for failure in export_failures]
        reason = f"the final export failed for clients {missing[:10]}"
        payload = _write(run_dir, strategy, clients, export_failures, stopped={"round": None, "reason": reason})
        raise RunFailed(f"{reason} (first: {export_failures[0]['kind']}: {export_failures[0]['reason']}); "
                        f"the other clients' results are in {run_dir / RESULTS_FILE} (status partial)")
    payload = _write(run_dir, strategy, clients, [], stopped=None)
    shutil.rmtree(state_root(scenario, run_dir) / strategy.run_token, ignore_errors=True)
    return payload


def _write(run_dir: Path, strategy: PersonalizedStrategy, clients: list[dict[str, float]], export_failures: list[dict[str, Any]],
           stopped: dict[str, Any] | None) -> dict[str, Any]:
    payload = build_payload(
        scenario=strategy.scenario.to_mapping(),
        strategy=strategy.scenario.strategy,
        policy=strategy.policy.to_config(),
        consensus_generic=strategy.consensus_generic,
        rounds=[strategy.rounds[number].to_json() for number in sorted(strategy.rounds)],
        clients=sorted(clients, key=lambda client: client["client-id"]),
        export_failures=export_failures,
        stopped=stopped,
        adapts_before_export=strategy.policy.adapts_before_export,
        partition=_partition(strategy.scenario),
        global_base=strategy.global_base,
    )
    write_run(run_dir, payload)
    timings: dict[str, Any] = {"round-seconds": {str(r): s for r, s in sorted(strategy.timings.items())}}
    if strategy.export_seconds is not None:
        timings["export-seconds"] = strategy.export_seconds
    atomic.write_json(run_dir / TIMINGS_FILE, timings)
    return payload


def _partition(scenario: Scenario) -> dict[str, Any]:
    """The split the clients held, for results.json (each client computes the same one from the scenario)."""
    if scenario.is_language_model:
        spec = scenario.text_spec()
        return topic_record([spec.topic_of(client) for client in range(spec.num_clients)], scenario.pretrain_seed)
    data = load_cifar10_cached(scenario.data_source or None)
    partition = make_partition(data.train.labels, data.test.labels, scenario.partition_spec())
    return partition_record(CLASSES, partition.label_counts, len(partition.public_indices), scenario.pretrain_seed)


@dataclass(frozen=True)
class RunJob:
    """One federation of a batch: its scenario (one seed, one strategy), where it writes, how it shows progress."""

    scenario: Scenario
    run_dir: Path
    resume: bool = False
    observer: RoundObserver | None = None
    # At most this many messages waiting at once in the roll call and the export (None: all).
    in_flight: int | None = None


def run_all(grid: Grid, jobs: Sequence[RunJob]) -> None:
    """Every federation in turn; one that fails leaves its partial results and the others still run.

    A single run's failure propagates as it was raised; with several, one
    :class:`RunFailed` at the end names how many failed and the first.
    """
    failed: list[tuple[RunJob, RunFailed]] = []
    for job in jobs:
        try:
            run_federation(grid, job.scenario, job.run_dir, job.resume, job.observer, job.in_flight)
        except RunFailed as failure:
            if len(jobs) == 1:
                raise
            log.warning("%s (seed %d) failed: %s", job.scenario.strategy, job.scenario.seed, failure)
            failed.append((job, failure))
    if failed:
        job, failure = failed[0]
        raise RunFailed(f"{len(failed)} of {len(jobs)} runs failed; the others completed. First: {job.scenario.strategy} "
                        f"seed {job.scenario.seed}: {failure}")


def server_app_for(jobs: Sequence[RunJob], engine_stopped: threading.Event) -> ServerApp:
    """A ServerApp bound to already parsed scenarios (the in-process ``fedhei run`` and ``fedhei bench`` path);
    its waits end when ``engine_stopped`` is set."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        stop_waiting_when(engine_stopped)
        run_all(grid, jobs)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        scenario = Scenario.from_mapping(dict(context.run_config))
        runs = seed_runs(scenario, scenario.run_dir())
        found = earlier_run([scenario.run_dir(), *(run_dir for _, run_dir in runs)])
        if found:
            # A run config cannot carry fedhei run's --overwrite: refuse, never replace.
            raise FedheiError(f"{found}; flwr run does not replace it: give another out-dir or name in --run-config, "
                              "or move it away")
    except FedheiError as error:
        log.error("fedhei: error: %s", error)
        raise
    try:
        run_all(grid, [RunJob(seeded, run_dir) for seeded, run_dir in runs])
    finally:
        written = [load_run(run_dir) for _, run_dir in runs if (run_dir / RESULTS_FILE).is_file()]
        if scenario.seeds and written:
            write_comparison(written, scenario.run_dir())

"""``fedhei run`` and ``fedhei bench``: scenarios on Flower's simulation engine, in-process.

It starts both Flower apps, so it sits on the Flower side, above the core; the
command line (``fedhei.cli``) is the one part of the core that calls it.

Everything a run could fail on that does not need a client is checked here first
(settings, strategy, device, Ray head, writable paths, data, partition, base model,
checkpoint, an earlier run in the way), so bad input ends in one line before any
worker starts or any file of the run is written.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.simulation import run_simulation

from clients.client_app import app as client_app
from fedhei.atomic import check_writable
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError, RunFailed
from fedhei.experiments.layout import seed_runs, state_root
from fedhei.federation.server import scenario_base_model
from fedhei.models.registry import create_model
from fedhei.reporting.comparison import load_run
from fedhei.reporting.progress import ProgressDisplay
from fedhei.reporting.report import BENCH_FILE, REPORT_FILE, write_bench, write_comparison
from fedhei.reporting.results import COMPLETE, FINAL_ROUND_NONE, RESULTS_FILE, global_verdict, summary_line
from fedhei.terminal import console
from fedhei.training.device import check_device_available, pick_device
from strategies import STRATEGIES, resolve_strategy
from strategies.checkpoint import CHECKPOINT_FILE, ServerCheckpoint
from strategies.server_app import RunJob, earlier_run, server_app_for

# How long a run waits for the Ray head at ray-address to accept a connection before it refuses.
RAY_HEAD_WAIT_S = 5.0


def backend_config(scenario: Scenario, verbose: bool) -> dict[str, Any]:
    """Ray's share per simulated client, from the scenario; Ray's own logs only when asked.

    A client gets a GPU share only when the run uses the GPU: with device "auto" and no
    share, Ray hides the GPU from the clients and they run on the CPU. With ``ray-address``
    the simulation joins that cluster (Ray's own ``address`` argument); without it Ray is told
    "local", so a cluster left behind by an earlier ``ray start`` (Ray would join the newest one
    it finds) never captures a run meant for this machine.
    """
    gpus = scenario.client_num_gpus if pick_device(scenario.device).type == "cuda" else 0.0
    init_args: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}
    if scenario.ray_address:
        init_args["address"] = scenario.ray_address
    else:
        init_args.update(address="local", include_dashboard=False)
    return {"client_resources": {"num_cpus": scenario.client_num_cpus, "num_gpus": gpus}, "init_args": init_args}


def check_ray_address(address: str, wait: float = RAY_HEAD_WAIT_S) -> None:
    """Refuse a ``ray-address`` where no Ray head listens, within ``wait`` seconds: Ray itself retries for minutes.

    Ray's own words "auto" (the cluster ``ray start`` recorded on this machine) and "local" name no address to try.
    """
    if address in ("", "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FedheiError(f"ray-address is '{address}'; give the Ray head's host:port (e.g. 10.0.0.5:6379), "
                          "ray://host:port or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=wait):
            pass
    except OSError as error:
        reason = "no answer" if isinstance(error, TimeoutError) else error.strerror or str(error)
        raise FedheiError(f"no Ray head answers at ray-address {address} (waited up to {wait:g} s: {reason}); start the "
                          "head (ray start --head) or fix ray-address") from error


def local_workers(scenario: Scenario) -> int:
    """Clients a simulation on this machine runs at once: a local Ray's CPUs over client-num-cpus, as Flower
    sizes its actor pool."""
    return max(1, int((os.cpu_count() or 1) // scenario.client_num_cpus))


def simulation_in_flight(scenario: Scenario) -> int | None:
    """How many messages the server lets wait at once in a simulation on this machine: twice the clients Ray
    runs at once, so no worker waits while Flower's engine scans only a few.
    On a cluster (``ray-address``) its size is not known here: no limit."""
    if scenario.ray_address:
        return None
    return 2 * local_workers(scenario)


class _QuietFlower(logging.Filter):
    """Drop what fedhei reports itself: the in-process deprecation note, and the simulation
    engine's traceback for every client that raised (each failure is recorded with its
    reason in results.json and counted in the round's line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "DEPRECATED FEATURE" in record.getMessage():
            return False
        return not (record.levelno >= logging.ERROR and "fleet/vce" in record.pathname.replace(os.sep, "/"))


def quiet_flower(verbose: bool) -> None:
    """Flower logs every message at INFO; a run prints its own line per round instead."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose and not any(isinstance(f, _QuietFlower) for f in flower.filters):
        flower.addFilter(_QuietFlower())


def preflight(scenario: Scenario, run_dir: Path, resume: bool) -> None:
    """Every check a run can make before its simulation starts; writes nothing of the run."""
    resolve_strategy(scenario.strategy)
    check_device_available(scenario.device)
    if scenario.device.startswith("cuda") and scenario.client_num_gpus == 0:
        raise FedheiError(f"device is '{scenario.device}' but client-num-gpus is 0, so Ray would hide the GPU from the "
                          "clients; set client-num-gpus (e.g. 0.25 for four clients per GPU)")
    check_ray_address(scenario.ray_address)
    check_writable(run_dir, "run directory")
    if scenario.state_store == "disk":
        check_writable(state_root(scenario, run_dir), "client state directory (state-dir)")
    if not scenario.is_language_model:
        data = load_cifar10_cached(scenario.data_source or None)
        make_partition(data.train.labels, data.test.labels, scenario.partition_spec())
    scenario_base_model(scenario)
    if resume:
        if scenario.state_store != "disk":
            raise FedheiError(f"this run kept client state in memory (state-store = \"{scenario.state_store}\"), which a "
                              "kill loses; only runs with state-store = \"disk\" (the default) can resume")
        ServerCheckpoint.load(run_dir).check_scenario(scenario.to_mapping())
        results = run_dir / RESULTS_FILE
        if results.is_file() and json.loads(results.read_text(encoding="utf-8")).get("status") == COMPLETE:
            raise FedheiError(f"{run_dir} holds a complete run; nothing to resume (start a new run without --resume)")


def run_scenario(scenario: Scenario, run_dir: Path, resume: bool = False, verbose: bool = False, quiet: bool = False) -> dict[str, Any]:
    """One strategy on one scenario; returns the results.json payload.

    Errors raised inside the simulation (the server thread) come back here after
    Flower has shut the simulation down, and propagate as they were raised.
    """
    run_batch([PlannedRun(scenario, run_dir, resume)], verbose=verbose, quiet=quiet)
    return json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class PlannedRun:
    scenario: Scenario
    run_dir: Path
    resume: bool = False

    @property
    def label(self) -> str:
        """How progress lines name the run: the strategy, and the seed when it is one of several."""
        return self.scenario.strategy + (f" seed {self.scenario.seed}" if self.run_dir.name.startswith("seed-") else "")


def run_batch(runs: Sequence[PlannedRun], verbose: bool = False, quiet: bool = False) -> None:
    """Several runs (seeds, strategies) on the same number of clients, in one simulation where possible.

    Every run is checked before any starts. With client state on disk (under each run's
    own token) the runs share one simulation, so Ray and its workers start once; state
    kept in Flower's ``context.state`` would outlive a run within a simulation, so then
    each run gets its own. A failed run leaves its partial results; the others still run.
    """
    quiet_flower(verbose)
    # Keeps Ray's current behaviour for CPU-only actors and silences its warning about the future one.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    for run in runs:
        preflight(run.scenario, run.run_dir, run.resume)
    together = all(run.scenario.state_store == "disk" for run in runs)
    batches = [list(runs)] if together else [[run] for run in runs]
    with ProgressDisplay(len(runs), quiet=quiet) as display:
        for batch in batches:
            jobs = [RunJob(run.scenario, run.run_dir, run.resume, display.observer(run.label), simulation_in_flight(run.scenario))
                    for run in batch]
            engine_stopped = threading.Event()
            try:
                run_simulation(
                    server_app=server_app_for(jobs, engine_stopped),
                    client_app=client_app,
                    num_supernodes=batch[0].scenario.num_clients,
                    backend_config=backend_config(batch[0].scenario, verbose),
                )
            except RunFailed:
                if len(runs) == 1:
                    raise
            except RuntimeError as error:
                # Flower ends the simulation this way when its engine fails (Ray could not start, a worker
                # pool died); the cause is the line the user needs.
                cause = error.__cause__ or error
                first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
                raise RunFailed(f"the simulation engine stopped: {first_line}") from error
            finally:
                engine_stopped.set()
    unfinished = [(run, _status(run.run_dir)) for run in runs if _status(run.run_dir) != COMPLETE]
    if unfinished:
        shown = "; ".join(f"{run.label}: {status}" for run, status in unfinished[:3])
        raise RunFailed(f"{len(unfinished)} of {len(runs)} runs did not complete ({shown}); the others did, and each "
                        "run's results.json says how far it got")


def _status(run_dir: Path) -> str:
    """"complete", or why not."""
    results = run_dir / RESULTS_FILE
    if not results.is_file():
        return "no results.json"
    payload = json.loads(results.read_text(encoding="utf-8"))
    return COMPLETE if payload["status"] == COMPLETE else str(payload["stopped"]["reason"])


def fedavg_upload_per_round(scenario: Scenario) -> float:
    """What FedAvg would upload per round on this scenario: every parameter, dense, float32.

    Computed, not simulated: FedAvg's upload does not depend on training, so a second
    simulation would only cost time.
    """
    model = create_model(scenario.model)
    per_client = sum(len(name) + parameter.numel() * 4 for name, parameter in model.named_parameters())
    return float(per_client * max(1, round(scenario.num_clients * scenario.fraction_train)))


def plan_runs(pairs: Sequence[tuple[Scenario, Path]], continuing: bool) -> list[PlannedRun]:
    """The runs still to do. Continuing, a complete run is kept (if it had the same settings), one with a
    checkpoint resumes from it, and the rest start afresh."""
    planned = []
    for scenario, run_dir in pairs:
        if continuing and _status(run_dir) == COMPLETE:
            recorded = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))["scenario"]
            if recorded != scenario.to_mapping():
                raise FedheiError(f"{run_dir} holds a complete run with other settings; continue with the same scenario, "
                                  "--set and --seeds values, or start afresh in a new --out")
            continue
        planned.append(PlannedRun(scenario, run_dir, resume=continuing and (run_dir / CHECKPOINT_FILE).is_file()))
    return planned


def _run_and_compare(pairs: Sequence[tuple[Scenario, Path]], out: Path, continuing: bool, verbose: bool, quiet: bool,
                     bench: bool) -> str:
    """Run what is left of ``pairs``, then write the comparison of every run that has results (even if some failed)."""
    planned = plan_runs(pairs, continuing)
    try:
        if planned:
            run_batch(planned, verbose=verbose, quiet=quiet)
    finally:
        written = [load_run(run_dir) for _, run_dir in pairs if (run_dir / RESULTS_FILE).is_file()]
        tables = ""
        if written:
            references = pairs[0][0].references()
            tables = write_bench(written, out, references) if bench else write_comparison(written, out, references)
    for run in written:
        print(summary_line(run.payload, label=f"{run.strategy} seed {run.seed}"))
    return tables


def refuse_earlier_run(out: Path, run_dirs: Sequence[Path], resume: Path | None, overwrite: bool) -> None:
    """A new run or bench into ``out`` (its runs in ``run_dirs``) must not silently replace an earlier one."""
    if resume is not None:
        if overwrite:
            raise FedheiError("--resume continues the run in its directory and --overwrite replaces it; give one of them")
        return
    found = None if overwrite else earlier_run([out, *run_dirs])
    if found:
        raise FedheiError(f"{found}; choose another --out, continue a partial run with --resume {out}, "
                          "or replace it with --overwrite")


def run_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None, data: str = "",
                resume: Path | None = None, verbose: bool = False, quiet: bool = False, seeds: str = "",
                overwrite: bool = False) -> int:
    overrides = [*overrides, f"seeds={seeds}"] if seeds else list(overrides)
    scenario = load_scenario(path, overrides, data)
    if len(strategies) > 1:
        return bench_command(path, overrides, strategies, out, data, verbose=verbose, quiet=quiet, resume=resume,
                             overwrite=overwrite)
    if strategies:
        scenario = scenario.replace(strategy=strategies[0])
    run_dir = resume or out or scenario.run_dir()
    refuse_earlier_run(run_dir, [seeded_dir for _, seeded_dir in seed_runs(scenario, run_dir)], resume, overwrite)
    if scenario.seeds:
        tables = _run_and_compare(seed_runs(scenario, run_dir), run_dir, resume is not None, verbose, quiet, bench=False)
        print(tables)
        print(f"report: {run_dir / REPORT_FILE}; each seed's results, models and report: {run_dir}/seed-<seed>")
        return 0
    payload = run_scenario(scenario, run_dir, resume=resume is not None, verbose=verbose, quiet=quiet)
    print(summary_line(payload, fedavg_upload_per_round(scenario)))
    if payload["final-round"] != FINAL_ROUND_NONE and not quiet:
        console.print("(final figures: after each client's last local round on the final global model; see report.md)",
                      markup=False, highlight=False)
    print(f"results: {run_dir / RESULTS_FILE}, report: {run_dir / REPORT_FILE}, models: {run_dir / 'clients'}")
    verdict = global_verdict(payload)
    if verdict:
        print(verdict)
    return 0


def bench_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None, data: str = "",
                  verbose: bool = False, quiet: bool = False, seeds: str = "", resume: Path | None = None,
                  overwrite: bool = False) -> int:
    """Every strategy on the same scenario (all built-in ones, in the registry's order, unless named), each seed's
    data and sampled clients shared by all; one comparison.

    Runs go seed by seed (every strategy of seed 0, then of seed 1, ...), so a bench
    stopped early holds whole seeds; ``resume`` continues it in its directory.
    """
    overrides = [*overrides, f"seeds={seeds}"] if seeds else list(overrides)
    scenario = load_scenario(path, overrides, data)
    names = list(strategies) or list(STRATEGIES)
    for name in [*names, *scenario.references()]:
        resolve_strategy(name)
    bench_dir = resume or out or Path(scenario.out_dir) / scenario.name / "bench"
    pairs = [pair for name in names
             for pair in seed_runs(scenario.replace(strategy=name), bench_dir / name.replace(":", "-"))]
    pairs.sort(key=lambda pair: pair[0].seed)
    refuse_earlier_run(bench_dir, [run_dir for _, run_dir in pairs], resume, overwrite)
    tables = _run_and_compare(pairs, bench_dir, resume is not None, verbose, quiet, bench=True)
    print(tables)
    print(f"table: {bench_dir / BENCH_FILE}, figures and every run: {bench_dir / REPORT_FILE}")
    return 0

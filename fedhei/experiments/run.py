"""``fedhei run`` and ``fedhei bench``: scenarios on Flower's simulation engine, in-process.

This is the one core module that reaches Flower, and only when called: the apps
are imported inside the functions so ``import fedhei`` stays Flower-free.

Everything a run could fail on that does not need a client is checked here first
(settings, strategy, device, data, partition, base model, checkpoint, writable
paths), so bad input ends in one line before any worker starts or any file of the
run is written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedhei import atomic
from fedhei.config.scenario import Scenario, parse_override
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError
from fedhei.reporting.progress import RoundLines, console
from fedhei.reporting.results import COMPLETE, FINAL_ROUND_NONE, RESULTS_FILE, bench_table, human_bytes
from fedhei.training.device import check_device_available, pick_device
from fedhei.training.pretrain import base_model

# Every strategy a bench compares, in the order of its table.
BENCH_STRATEGIES = ("fedhei", "fedhei-uniform", "fedavg", "fedavg-ft", "fedper", "fedrep", "lg-fedavg", "local", "ditto",
                    "fedala", "fedbabu")


def load_scenario(path: Path, overrides: Sequence[str], data: str = "") -> Scenario:
    values = dict(parse_override(text) for text in overrides)
    if data:
        values["data-source"] = data
    return Scenario.from_toml(path, values)


def backend_config(scenario: Scenario, verbose: bool) -> dict[str, Any]:
    """Ray's share per simulated client, from the scenario; Ray's own logs only when asked.

    A client gets a GPU share only when the run uses the GPU: with device "auto" and no
    share, Ray hides the GPU from the clients and they run on the CPU.
    """
    gpus = scenario.client_num_gpus if pick_device(scenario.device).type == "cuda" else 0.0
    return {
        "client_resources": {"num_cpus": scenario.client_num_cpus, "num_gpus": gpus},
        "init_args": {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose,
                      "include_dashboard": False},
    }


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


def _check_writable(directory: Path, what: str) -> None:
    """Refuse a directory that cannot be created or written, without creating anything."""
    existing = directory.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        reason = "is not a folder" if not existing.is_dir() else "is not writable"
        raise FedheiError(f"cannot write the {what} {directory} ({existing} {reason}); choose a writable path")


def preflight(scenario: Scenario, run_dir: Path, resume: bool) -> None:
    """Every check a run can make before its simulation starts; writes nothing of the run."""
    from strategies import resolve_strategy
    from strategies.checkpoint import ServerCheckpoint
    from strategies.server_app import state_root

    resolve_strategy(scenario.strategy)
    check_device_available(scenario.device)
    if scenario.device.startswith("cuda") and scenario.client_num_gpus == 0:
        raise FedheiError(f"device is '{scenario.device}' but client-num-gpus is 0, so Ray would hide the GPU from the "
                          "clients; set client-num-gpus (e.g. 0.25 for four clients per GPU)")
    data = load_cifar10_cached(scenario.data_source or None)
    make_partition(data.train.labels, data.test.labels, scenario.partition_spec())
    base_model(data, scenario.pretrain_spec(), scenario.base_model, scenario.device)
    if resume:
        if scenario.state_store != "disk":
            raise FedheiError(f"this run kept client state in memory (state-store = \"{scenario.state_store}\"), which a "
                              "kill loses; only runs with state-store = \"disk\" (the default) can resume")
        ServerCheckpoint.load(run_dir).check_scenario(scenario.to_mapping())
        results = run_dir / RESULTS_FILE
        if results.is_file() and json.loads(results.read_text(encoding="utf-8")).get("status") == COMPLETE:
            raise FedheiError(f"{run_dir} holds a complete run; nothing to resume (start a new run without --resume)")
    _check_writable(run_dir, "run directory")
    if scenario.state_store == "disk":
        _check_writable(state_root(scenario, run_dir), "client state directory (state-dir)")


def run_scenario(scenario: Scenario, run_dir: Path, resume: bool = False, verbose: bool = False, quiet: bool = False) -> dict[str, Any]:
    """One strategy on one scenario; returns the results.json payload.

    Errors raised inside the simulation (the server thread) come back here after
    Flower has shut the simulation down, and propagate as they were raised.
    """
    from flwr.simulation import run_simulation

    from clients.client_app import app as client_app
    from strategies.server_app import server_app_for

    quiet_flower(verbose)
    # Keeps Ray's current behaviour for CPU-only actors and silences its warning about the future one.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    preflight(scenario, run_dir, resume)
    observer = RoundLines(scenario.strategy, quiet=quiet)
    run_simulation(
        server_app=server_app_for(scenario, run_dir, resume, observer),
        client_app=client_app,
        num_supernodes=scenario.num_clients,
        backend_config=backend_config(scenario, verbose),
    )
    return json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))


def summary_line(payload: dict[str, Any], baseline_up: float | None = None) -> str:
    summary = payload["summary"]
    line = (
        f"{payload['strategy']}: mean client accuracy {100 * summary.get('accuracy-mean', float('nan')):.1f}% "
        f"(worst decile {100 * summary.get('accuracy-worst-decile', float('nan')):.1f}%, "
        f"majority-class rate {100 * summary['majority-class-rate-mean']:.1f}%), "
        f"compression {100 * summary['compression-mean']:.1f}%, "
        f"upload {human_bytes(summary['bytes-up-per-round'])}/round"
    )
    if baseline_up:
        line += f" ({100 * summary['bytes-up-per-round'] / baseline_up:.0f}% of FedAvg's)"
    failures = payload["failures"]
    if failures["total"]:
        line += f"; {failures['total']} client failures ({', '.join(f'{k} {v}' for k, v in failures['by-kind'].items())})"
    return line


def fedavg_upload_per_round(scenario: Scenario) -> float:
    """What FedAvg would upload per round on this scenario: every parameter, dense, float32.

    Computed, not simulated: FedAvg's upload does not depend on training, so a second
    simulation would only cost time.
    """
    from fedhei.models.registry import create_model

    model = create_model(scenario.model)
    per_client = sum(len(name) + parameter.numel() * 4 for name, parameter in model.named_parameters())
    return float(per_client * max(1, round(scenario.num_clients * scenario.fraction_train)))


def run_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None, data: str = "",
                resume: Path | None = None, verbose: bool = False, quiet: bool = False) -> int:
    scenario = load_scenario(path, overrides, data)
    if len(strategies) > 1:
        if resume is not None:
            raise FedheiError("--resume continues one run; give one --strategy (or none) with it")
        return bench_command(path, overrides, strategies, out, data, verbose=verbose, quiet=quiet)
    if strategies:
        scenario = scenario.replace(strategy=strategies[0])
    run_dir = resume or out or scenario.run_dir()
    payload = run_scenario(scenario, run_dir, resume=resume is not None, verbose=verbose, quiet=quiet)
    print(summary_line(payload, fedavg_upload_per_round(scenario)))
    if payload["final-round"] != FINAL_ROUND_NONE and not quiet:
        console.print("(final figures: after each client's last local round on the final global model; see report.md)",
                      markup=False, highlight=False)
    print(f"results: {run_dir / RESULTS_FILE}, report: {run_dir / 'report.md'}, models: {run_dir / 'clients'}")
    return 0


def bench_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None, data: str = "",
                  verbose: bool = False, quiet: bool = False) -> int:
    """Every strategy on the same scenario, same data, seed and sampled clients, one after another; one table."""
    from strategies import resolve_strategy

    scenario = load_scenario(path, overrides, data)
    names = list(strategies) or list(BENCH_STRATEGIES)
    for name in names:
        resolve_strategy(name)
    bench_dir = out or Path(scenario.out_dir) / scenario.name / "bench"
    rows = []
    for name in names:
        payload = run_scenario(scenario.replace(strategy=name), bench_dir / name.replace(":", "-"), verbose=verbose, quiet=quiet)
        print(summary_line(payload))
        rows.append((name, payload["summary"]))
    table = bench_table(rows)
    header = (f"# {scenario.name}: strategies side by side\n\n{scenario.num_clients} clients, {scenario.partition}, "
              f"{scenario.num_server_rounds} rounds, model {scenario.model}, prob {scenario.prob}, seed {scenario.seed}.\n\n")
    atomic.write_text(bench_dir / "bench.md", header + table)
    print(table)
    print(f"table: {bench_dir / 'bench.md'}")
    return 0

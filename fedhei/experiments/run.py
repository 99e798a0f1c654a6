"""``fedhei run`` and ``fedhei bench``: scenarios on Flower's simulation engine, in-process.

This is the one core module that reaches Flower, and only when called: the apps
are imported inside the functions so ``import fedhei`` stays Flower-free.
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
from fedhei.errors import FedheiError
from fedhei.reporting.results import bench_table, human_bytes
from fedhei.training.loops import pick_device
from fedhei.training.pretrain import base_model

# Every strategy a bench compares, in the order of its table.
BENCH_STRATEGIES = ("fedhei", "fedhei-uniform", "fedavg", "fedavg-ft", "fedper", "fedrep", "lg-fedavg", "local")


def load_scenario(path: Path, overrides: Sequence[str]) -> Scenario:
    return Scenario.from_toml(path, dict(parse_override(text) for text in overrides))


def backend_config(scenario: Scenario) -> dict[str, Any]:
    """One CPU per simulated client (a GPU share when there is one), quiet Ray logs."""
    gpu = 0.25 if pick_device(scenario.device).type == "cuda" else 0.0
    return {"client_resources": {"num_cpus": 1, "num_gpus": gpu}, "init_args": {"logging_level": logging.ERROR, "log_to_driver": True, "include_dashboard": False}}


class _DropDeprecation(logging.Filter):
    """``run_simulation`` is the in-process entry we mean to use; its deprecation note is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in record.getMessage()


def quiet_flower(verbose: bool) -> None:
    """Flower logs every message at INFO; a run prints its own line per round instead."""
    flower = logging.getLogger("flwr")
    flower.propagate = False
    flower.setLevel(logging.INFO if verbose else logging.WARNING)
    flower.addFilter(_DropDeprecation())


def run_scenario(scenario: Scenario, run_dir: Path) -> dict[str, Any]:
    """One strategy on one scenario; returns the results.json payload."""
    from flwr.simulation import run_simulation

    from clients.client_app import app as client_app
    from strategies import resolve_strategy
    from strategies.server_app import server_app_for

    resolve_strategy(scenario.strategy)
    # Keeps Ray's current behaviour for CPU-only actors and silences its warning about the future one.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Data and base model first, in this process: errors surface as one line, and the
    # pre-training progress bar shows here rather than inside the simulation's server thread.
    data = load_cifar10_cached(scenario.data_source or None)
    base_model(data, scenario.pretrain_spec(), scenario.base_model, scenario.device)
    results_file = run_dir / "results.json"
    results_file.unlink(missing_ok=True)
    run_simulation(
        server_app=server_app_for(scenario, run_dir),
        client_app=client_app,
        num_supernodes=scenario.num_clients,
        backend_config=backend_config(scenario),
    )
    if not results_file.is_file():
        raise FedheiError(f"the simulation of {scenario.name} ({scenario.strategy}) ended without results; "
                          "rerun with -v to see Flower's log")
    return json.loads(results_file.read_text(encoding="utf-8"))


def print_summary(payload: dict[str, Any], baseline_up: float | None = None) -> None:
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
    print(line)


def fedavg_upload_per_round(scenario: Scenario) -> float:
    """What FedAvg would upload per round on this scenario: every parameter, dense, float32.

    Computed, not simulated: FedAvg's upload does not depend on training, so a second
    simulation would only cost time.
    """
    from fedhei.models.registry import create_model

    model = create_model(scenario.model)
    per_client = sum(len(name) + parameter.numel() * 4 for name, parameter in model.named_parameters())
    return float(per_client * max(1, round(scenario.num_clients * scenario.fraction_train)))


def run_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None) -> int:
    quiet_flower(logging.getLogger().isEnabledFor(logging.INFO))
    scenario = load_scenario(path, overrides)
    if len(strategies) > 1:
        return bench_command(path, overrides, strategies, out)
    if strategies:
        scenario = scenario.replace(strategy=strategies[0])
    run_dir = out or scenario.run_dir()
    payload = run_scenario(scenario, run_dir)
    print_summary(payload, fedavg_upload_per_round(scenario))
    print(f"results: {run_dir / 'results.json'}, report: {run_dir / 'report.md'}, models: {run_dir / 'clients'}")
    return 0


def bench_command(path: Path, overrides: Sequence[str], strategies: Sequence[str], out: Path | None) -> int:
    """Every strategy on the same scenario, same data and seed, one after another; one table."""
    quiet_flower(logging.getLogger().isEnabledFor(logging.INFO))
    scenario = load_scenario(path, overrides)
    names = list(strategies) or list(BENCH_STRATEGIES)
    bench_dir = out or Path(scenario.out_dir) / scenario.name / "bench"
    rows = []
    for name in names:
        payload = run_scenario(scenario.replace(strategy=name), bench_dir / name.replace(":", "-"))
        print_summary(payload)
        rows.append((name, payload["summary"]))
    table = bench_table(rows)
    header = (f"# {scenario.name}: strategies side by side\n\n{scenario.num_clients} clients, {scenario.partition}, "
              f"{scenario.num_server_rounds} rounds, model {scenario.model}, prob {scenario.prob}, seed {scenario.seed}.\n\n")
    atomic.write_text(bench_dir / "bench.md", header + table)
    print(table)
    print(f"table: {bench_dir / 'bench.md'}")
    return 0

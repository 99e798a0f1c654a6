"""The simulator's own cost: a scenario through ``fedhei run`` (Flower + Ray) and as a plain loop, side by side.

Both sides run the same federation from the same seed: the simulation is
``strategies.simulation.run_scenario`` into a temporary run directory; the plain loop
is ``fedhei.experiments.plain.run_plain`` (the same sampled clients, local rounds,
masked aggregation, per-round evaluation and final export, no Flower, no Ray, one
process, torch at ``--plain-threads``). Each side runs in a fresh child process, so
that neither inherits the other's memory, while a thread of this script samples the
child's whole process tree every 0.2 s (Ray's GCS, raylet and workers included):
the peak of the summed proportional set size (PSS, shared pages split between the
processes that map them) and the CPU seconds of every process seen. Bytes up and
down per round are the simulation's own counts (``results.json``), set against
FedAvg's: every float32 parameter, dense, to and from every client of a round.

The script checks that both sides give every client the same final accuracy, and says
so. Wall times on a shared machine are upper bounds; CPU seconds are less sensitive to
other jobs but count Ray's idle polling too.

    nice -n 5 python benchmarks/scale.py scenarios/quickstart.toml [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.table import Table

from fedhei import atomic
from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.errors import FedheiError
from fedhei.federation.sampling import SAMPLE_TRAIN, sample_clients
from fedhei.reporting.results import TIMINGS_FILE, human_bytes
from fedhei.reporting.tables import stdout

SAMPLE_SECONDS = 0.2
# What each side's final per-client figures are compared on.
ACCURACY_KEYS = ("accuracy", "accuracy-weighted")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--plain-threads", type=int, default=0,
                        help="torch threads of the plain loop (default: client-num-cpus, each simulated client's own count)")
    parser.add_argument("--plain-export-clients", type=int, default=None,
                        help="export only the first N clients on the plain side (default: all, as the simulation does)")
    parser.add_argument("--caption", default="", help="a note printed under the table and kept in the JSON")
    parser.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    return parser.parse_args(argv)


class TreeSampler:
    """Peak summed PSS, and CPU seconds, of a process and all its descendants, sampled in a background thread.

    A process's CPU time is its last sample's, so a short-lived process that exits
    between two samples is missed and a longer one loses at most one interval.
    """

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_bytes = 0
        self.cpu_seconds: dict[int, float] = {}
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for process in tree:
            try:
                total += process.memory_full_info().pss
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.cpu_seconds[process.pid] = times.user + times.system
        self.peak_bytes = max(self.peak_bytes, total)
        self.processes = max(self.processes, len(self.cpu_seconds))

    @property
    def cpu_total(self) -> float:
        return float(sum(self.cpu_seconds.values()))


def _simulation(scenario: Scenario, folder: Path) -> dict[str, Any]:
    from strategies.simulation import run_scenario

    run_dir = folder / "simulation"
    started = time.perf_counter()
    payload = run_scenario(scenario, run_dir, quiet=True)
    wall = time.perf_counter() - started
    timings = json.loads((run_dir / TIMINGS_FILE).read_text(encoding="utf-8"))
    return {
        "wall-seconds": wall,
        "round-seconds": [float(timings["round-seconds"][key]) for key in sorted(timings["round-seconds"], key=int)],
        "export-seconds": float(timings["export-seconds"]),
        "export-clients": scenario.num_clients,
        "bytes-up": [int(record["bytes-up"]) for record in payload["rounds"]],
        "bytes-down": [int(record["bytes-down"]) for record in payload["rounds"]],
        "finals": {str(int(client["client-id"])): {key: client[key] for key in ACCURACY_KEYS if key in client}
                   for client in payload["clients"]},
        "evaluated": {str(record["round"]): {str(row["client"]): row["accuracy"] for row in record["clients"]
                                             if row["client"] in record["evaluated"]} for record in payload["rounds"]},
    }


def _plain(scenario: Scenario, folder: Path, threads: int, export_clients: int | None) -> dict[str, Any]:
    from fedhei.experiments.plain import run_plain
    from strategies import resolve_strategy

    started = time.perf_counter()
    run = run_plain(scenario, resolve_strategy(scenario.strategy).policy, folder / "plain", threads, export_clients)
    wall = time.perf_counter() - started
    return {
        "wall-seconds": wall,
        "setup-seconds": run.setup_seconds,
        "round-seconds": [run.round_seconds[number] for number in sorted(run.round_seconds)],
        "export-seconds": run.export_seconds,
        "final-round-seconds": run.final_round_seconds,
        "export-clients": len(run.finals),
        "finals": {str(client): {key: metrics[key] for key in ACCURACY_KEYS if key in metrics}
                   for client, metrics in run.finals.items()},
        "evaluated": {str(number): {str(client): accuracy for client, accuracy in clients.items()}
                      for number, clients in run.evaluated.items()},
    }


def _child(side: str, scenario: Scenario, folder: Path, threads: int, export_clients: int | None) -> None:
    """One side in a fresh interpreter; its figures go to ``folder/<side>.json``."""
    figures = _simulation(scenario, folder) if side == "simulation" else _plain(scenario, folder, threads, export_clients)
    atomic.write_json(folder / f"{side}.json", figures)


def measure_side(side: str, scenario: Scenario, folder: Path, threads: int, export_clients: int | None) -> dict[str, Any]:
    """Run one side in a child process under the sampler; its figures with peak memory and CPU seconds."""
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(side, scenario, folder, threads, export_clients))
    child.start()
    assert child.pid is not None
    with TreeSampler(child.pid) as sampler:
        child.join()
    if child.exitcode != 0:
        raise FedheiError(f"the {side} side failed (exit status {child.exitcode}); its error is printed above")
    figures = json.loads((folder / f"{side}.json").read_text(encoding="utf-8"))
    figures.update({"peak-pss-bytes": sampler.peak_bytes, "cpu-seconds": sampler.cpu_total, "processes": sampler.processes})
    return figures


def fedavg_bytes_per_round(scenario: Scenario) -> int:
    """FedAvg's bytes each way per round: every parameter as float32, to or from each client of a round."""
    from fedhei.models.registry import create_model

    parameters = sum(parameter.numel() for parameter in create_model(scenario.model).parameters())
    per_round = len(sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_train, 1, SAMPLE_TRAIN))
    return 4 * parameters * per_round


def agreement(simulation: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
    """Whether every client the plain side exported has exactly the simulation's final accuracies, and the
    per-round evaluations too; the largest difference and the first clients that differ otherwise."""
    clients = sorted(plain["finals"], key=int)
    differing = [client for client in clients if plain["finals"][client] != simulation["finals"].get(client)]
    gaps = [abs(plain["finals"][client][key] - simulation["finals"][client][key])
            for client in differing if client in simulation["finals"] for key in plain["finals"][client]]
    rounds_agree = simulation["evaluated"] == plain["evaluated"]
    return {"clients": len(clients), "identical": not differing and rounds_agree, "differing": differing[:10],
            "max-difference": max(gaps, default=0.0), "rounds-identical": rounds_agree}


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize(scenario: Scenario, simulation: dict[str, Any], plain: dict[str, Any], threads: int) -> dict[str, Any]:
    dense = fedavg_bytes_per_round(scenario)
    return {
        "scenario": scenario.to_mapping(),
        "plain-threads": threads,
        "fedavg-bytes-per-round": dense,
        "simulation": simulation,
        "plain": plain,
        "agreement": agreement(simulation, plain),
        "machine": {"cpus": os.cpu_count(), "load-average": list(os.getloadavg())},
    }


def _rest(side: Mapping[str, Any]) -> float:
    """Wall time outside the rounds and the export: starting the engine, loading data and the base model, reports."""
    return float(side["wall-seconds"] - sum(side["round-seconds"]) - side["export-seconds"])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


COLUMNS = ("measure", "simulation", "plain loop", "simulation / plain")


def rows(summary: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table's rows, as text: the same for the terminal and for markdown."""
    sim, plain = summary["simulation"], summary["plain"]
    timed = [
        ("wall time (s)", sim["wall-seconds"], plain["wall-seconds"]),
        ("CPU time, all processes (s)", sim["cpu-seconds"], plain["cpu-seconds"]),
        ("rounds, total (s)", sum(sim["round-seconds"]), sum(plain["round-seconds"])),
        ("round, mean (s)", _mean(sim["round-seconds"]), _mean(plain["round-seconds"])),
        ("export, total (s)", sim["export-seconds"], plain["export-seconds"]),
        ("export per client (s)", sim["export-seconds"] / sim["export-clients"],
         plain["export-seconds"] / max(1, plain["export-clients"])),
        ("start, setup and reports: the rest (s)", _rest(sim), _rest(plain)),
    ]
    result = [(label, f"{left:.2f}", f"{right:.2f}", _ratio(left, right)) for label, left, right in timed]
    result.append(("final local round per client, in the export (s)", "",
                   f"{plain['final-round-seconds'] / max(1, plain['export-clients']):.2f}",
                   f"export / final rounds {_ratio(plain['export-seconds'], plain['final-round-seconds'])} (plain)"))
    result.append(("peak memory, PSS of all processes", human_bytes(sim["peak-pss-bytes"]), human_bytes(plain["peak-pss-bytes"]),
                   _ratio(sim["peak-pss-bytes"], plain["peak-pss-bytes"])))
    result.append(("processes seen", str(sim["processes"]), str(plain["processes"]), ""))
    dense = summary["fedavg-bytes-per-round"]
    for direction in ("up", "down"):
        sent = _mean(sim[f"bytes-{direction}"])
        result.append((f"bytes {direction} per round: {summary['scenario']['strategy']} / FedAvg dense float32",
                       human_bytes(sent), human_bytes(dense), f"{100 * sent / dense:.1f}% of FedAvg"))
    same = summary["agreement"]
    verdict = (f"identical on {same['clients']} clients" if same["identical"] else
               f"DIFFER: clients {same['differing']}, by up to {same['max-difference']:.4f}; per-round "
               f"evaluations {'identical' if same['rounds-identical'] else 'differ'}")
    result.append(("final per-client accuracies", verdict, "", ""))
    return result


def _title(summary: Mapping[str, Any]) -> str:
    scenario = summary["scenario"]
    return f"{scenario['name']}: simulation (Flower + Ray) against the plain loop ({scenario['num-clients']} registered clients)"


def table(summary: Mapping[str, Any]) -> Table:
    result = Table(title=_title(summary), caption=summary.get("caption") or None)
    for column in COLUMNS:
        result.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows(summary):
        result.add_row(*row)
    return result


def markdown(summary: Mapping[str, Any]) -> str:
    lines = [f"{_title(summary)}; {summary['caption']}" if summary.get("caption") else _title(summary), "",
             "| " + " | ".join(COLUMNS) + " |", "| --- | ---: | ---: | ---: |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(summary)]
    return "\n".join(lines) + "\n"


# The server's steps a plain loop replays as the base strategy does them.
SERVER_HOOKS = ("start", "configure_train", "aggregate_train", "combine", "after_aggregation", "configure_evaluate", "finalize")


def check_replayable(strategy: str) -> None:
    """Refuse a strategy whose server does something of its own (FedBABU's fresh head), which the plain loop would miss."""
    from strategies import resolve_strategy
    from strategies.base import PersonalizedStrategy

    found = resolve_strategy(strategy)
    own = [hook for hook in SERVER_HOOKS if getattr(found, hook) is not getattr(PersonalizedStrategy, hook)]
    if own:
        raise FedheiError(f"strategy '{strategy}' has server steps of its own ({', '.join(own)}) that the plain loop does "
                          "not replay; benchmark a strategy that only sets its client policy")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = load_scenario(args.scenario, args.overrides, args.data)
    check_replayable(scenario.strategy)
    threads = args.plain_threads or max(1, int(scenario.client_num_cpus))
    with tempfile.TemporaryDirectory(prefix="fedhei-scale-") as folder:
        plain = measure_side("plain", scenario, Path(folder), threads, args.plain_export_clients)
        simulation = measure_side("simulation", scenario, Path(folder), threads, args.plain_export_clients)
    summary = summarize(scenario, simulation, plain, threads)
    summary["caption"] = args.caption
    summary["overrides"] = list(args.overrides)
    stdout.print(table(summary))
    if args.markdown:
        print(markdown(summary))
    if args.json:
        atomic.write_json(args.json, summary)
        print(f"figures: {args.json}")
    return 0 if summary["agreement"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())

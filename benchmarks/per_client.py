"""What a cross-device round costs per client: what the clients compute, and what fedhei and Flower spend around it.

A round of a cross-device federation trains a few images on each of many clients, so
whatever a round spends besides that training weighs on every client. Four sides run
the same scenario, cut down to a round of training alone (strategy fedavg, no per-round
evaluation, no global evaluation, weighted-eval off, no injected faults), for ``--rounds``
rounds:

1. bare loop: one process, one model built once; per round, the clients the federation
   samples, in partition order: load the global weights from memory, train the client's
   own shard (fedhei's ``train``, the scenario's batch size, optimizer and step cap),
   take the weights out and average them by examples (a plain average: the server
   optimizer's step is left to fedhei's sides). No state, no encoding, no messages:
   what the clients compute.
2. plain loop: fedhei's own round without Flower or Ray (``train_plain_round``): model
   build, state load and save, data lookup, encode and decode, the server's step.
3. simulation: ``fedhei run``'s own path (``run_scenario``) into a temporary run
   directory. Its final export (every client's last round and model file: minutes at
   1,000 clients) is neither timed nor waited for: the server writes a checkpoint with
   every round's seconds after each round, and once the last round's is there this
   script ends the simulation's process tree (Ray's GCS, raylet and workers included).
4. plain Flower FedAvg: Flower's own FedAvg on its simulation engine, with Ray's
   resources as fedhei's simulation gets them, the same number of nodes and of clients a
   round; a ClientApp that builds the model, loads the received arrays, trains the same
   steps on its node's shard of the same partition and returns the arrays. Timed from
   the strategy's round loop (configure_train to aggregate_evaluate).

Each side runs in a fresh child process (spawn), one after another. A round's seconds
are the mean over rounds 2..R (round 1 warms up: data, first kernels, Ray's workers); a
client-round's are a round's over the clients it trained. The loops train one client
at a time with client-num-cpus torch threads; the simulation and plain Flower run
as many at once as Ray has workers (the machine's CPUs over client-num-cpus), so each
side is also set against the bare loop's compute spread over the same workers (bare /
workers: perfect scaling, the best the workers could do). On those workers a simulation
round splits into compute (bare / workers), fedhei in process ((plain - bare) / workers)
and Flower's messages and Ray (simulation - plain / workers).

The bare loop, the plain loop and the simulation train the same clients; the script
checks that every one trained on the same number of images in every round (same shard,
same settings: the same steps), and exits 1 where they differ. Plain Flower samples its
own nodes: its images per client-round are shown beside. Wall times compare only when the machine is otherwise
idle; the load average before and after is printed under the table.

    python benchmarks/per_client.py scenarios/cross-device.toml --set num-clients=1000 [--rounds 10] [--json out.json] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import torch
from rich.table import Table

from fedhei import atomic
from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.errors import FedheiError
from fedhei.experiments import plain
from fedhei.federation import client_round
from fedhei.federation.client_round import ClientJob, client_data
from fedhei.federation.policy import ClientPolicy
from fedhei.federation.sampling import SAMPLE_TRAIN, sample_clients
from fedhei.federation.server import scenario_base_model
from fedhei.federation.state import ClientState
from fedhei.processes import process_tree, wait_until_stopped
from fedhei.reporting.tables import stdout
from fedhei.training.device import pick_device
from fedhei.training.loops import TRAINED_EXAMPLES, ArrayBatches, train

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

BARE, PLAIN, SIMULATION, FLOWER = "bare loop", "plain loop", "simulation", "plain Flower FedAvg"
SIDES = (BARE, PLAIN, SIMULATION, FLOWER)
WHAT = {
    BARE: "what the clients compute",
    PLAIN: "fedhei's round in process, no Flower",
    SIMULATION: "fedhei run: Flower + Ray",
    FLOWER: "Flower's FedAvg app on its engine",
}
# What a round is cut down to: training alone, with nothing evaluated in or after it and no injected faults.
TRAINING_ONLY = {"strategy": "fedavg", "fraction_evaluate": 0.0, "weighted_eval": "off", "global_eval_every": 0,
                 "fault_crash": 0.0, "fault_hang": 0.0, "fault_drop": 0.0}
# How often the simulation's checkpoint is looked at, and how long its killed processes get to end.
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0
# Per (round, client): the images a client trained on, JSON-keyed by strings.
Work = dict[str, dict[str, int]]
Arrays = dict[str, np.ndarray]
TrainRound = Callable[[ClientJob, Arrays, ClientState | None], tuple[Arrays, dict[str, float], ClientState]]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--rounds", type=int, default=10, help="rounds every side runs; rounds 2.. are timed (sets num-server-rounds)")
    parser.add_argument("--overhead-bar", type=float, default=1.3,
                        help="the verdict's bar: a simulation client-round at most this many times the compute on the same workers")
    parser.add_argument("--caption", default="", help="a note printed under the table and kept in the JSON")
    parser.add_argument("--json", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as markdown")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error(f"--rounds {args.rounds}: give at least 2 (round 1 warms up and is not timed)")
    return args


def training_only(scenario: Scenario, rounds: int) -> Scenario:
    """The scenario with every round a round of training alone, for ``rounds`` rounds, on this machine."""
    if scenario.ray_address:
        raise FedheiError(f"ray-address is '{scenario.ray_address}'; this benchmark compares sides on one machine: leave it empty")
    if scenario.seeds:
        raise FedheiError(f"seeds is '{scenario.seeds}'; this benchmark runs one seed: give seed alone")
    return scenario.replace(num_server_rounds=rounds, **TRAINING_ONLY)


def client_threads(scenario: Scenario) -> int:
    """Torch threads of one client: a simulated client's own count (client-num-cpus), which the loops use too."""
    return max(1, int(scenario.client_num_cpus))


def simulation_workers(scenario: Scenario) -> int:
    """Clients a simulation on this machine trains at once (imported here, so that the loops' processes never
    import Flower)."""
    from strategies.simulation import local_workers

    return local_workers(scenario)


def sampled(scenario: Scenario, server_round: int) -> list[int]:
    """The clients the federation trains in ``server_round``, in partition order."""
    return sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_train, server_round, SAMPLE_TRAIN)


def fedavg_policy(scenario: Scenario) -> ClientPolicy:
    """What the scenario's strategy (fedavg, forced) asks of its clients."""
    from strategies import resolve_strategy

    return resolve_strategy(scenario.strategy).policy


# -- the sides, each in its own child process ------------------------------------------------------------


def _bare(scenario: Scenario, policy: ClientPolicy) -> dict[str, Any]:
    torch.set_num_threads(client_threads(scenario))
    model = scenario_base_model(scenario).to(pick_device(scenario.device))
    global_weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    rounds = range(1, scenario.num_server_rounds + 1)
    shards: dict[int, ArrayBatches] = {}
    for server_round in rounds:
        for client in sampled(scenario, server_round):
            if client not in shards:
                shards[client] = client_data(scenario, client, model).train
    seconds, images, steps = [], {}, {}
    for server_round in rounds:
        started = time.perf_counter()
        settings = scenario.train_settings(server_round)
        totals: dict[str, np.ndarray] = {}
        weight_sum = 0.0
        for client in sampled(scenario, server_round):
            model.load_state_dict(global_weights)
            result = train(model, shards[client], settings, seed=ClientJob(scenario, policy, client, server_round).seed)
            weight = result[TRAINED_EXAMPLES]
            for name, value in model.state_dict().items():
                weighted = weight * value.detach().cpu().numpy()
                totals[name] = totals[name] + weighted if name in totals else weighted
            weight_sum += weight
            images.setdefault(str(server_round), {})[str(client)] = int(result["examples"])
            steps.setdefault(str(server_round), {})[str(client)] = settings.total_steps(len(shards[client]))
        global_weights = {name: torch.from_numpy(total / weight_sum) for name, total in totals.items()}
        seconds.append(time.perf_counter() - started)
    return {"round-seconds": seconds, "images": images, "steps": steps, "workers": 1}


def _observing_train_round(images: Work) -> TrainRound:
    """fedhei's ``train_round``, noting the images each client trained on (``train_plain_round`` keeps its clients'
    metrics to itself)."""

    def train_round(job: ClientJob, global_arrays: Arrays, state: ClientState | None) -> tuple[Arrays, dict[str, float], ClientState]:
        update, metrics, new_state = client_round.train_round(job, global_arrays, state)
        images.setdefault(str(job.server_round), {})[str(job.client_id)] = int(metrics["examples"])
        return update, metrics, new_state

    return train_round


def _plain(scenario: Scenario, policy: ClientPolicy) -> dict[str, Any]:
    torch.set_num_threads(client_threads(scenario))
    server = plain.plain_server(scenario, policy)
    states: dict[int, ClientState] = {}
    images: Work = {}
    plain.train_round = _observing_train_round(images)
    seconds = []
    for server_round in range(1, scenario.num_server_rounds + 1):
        started = time.perf_counter()
        plain.train_plain_round(scenario, policy, server, states, server_round)
        seconds.append(time.perf_counter() - started)
    return {"round-seconds": seconds, "images": images, "workers": 1}


def _simulation(scenario: Scenario, run_dir: Path) -> None:
    from strategies.simulation import run_scenario

    run_scenario(scenario, run_dir, quiet=True)


def flower_client_app(scenario: Scenario, policy: ClientPolicy, threads: int) -> ClientApp:
    """A plain Flower ClientApp: per message, build the model, load the arrays, train this node's shard, reply.

    Its handler is defined in here so that Ray pickles it by value: the benchmark's own
    module is ``__mp_main__`` in its child, which Ray's workers cannot import.
    """
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    from fedhei.models.registry import create_model

    app = ClientApp()

    @app.train()
    def train_handler(message: Message, context: Context) -> Message:
        torch.set_num_threads(threads)
        partition = int(context.node_config["partition-id"])
        server_round = int(message.content["config"]["server-round"])
        model = create_model(scenario.model).to(pick_device(scenario.device))
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        shard = client_data(scenario, partition, model).train
        settings = scenario.train_settings(server_round)
        result = train(model, shard, settings, seed=ClientJob(scenario, policy, partition, server_round).seed)
        metrics = MetricRecord({"num-examples": result[TRAINED_EXAMPLES], "images": int(result["examples"]),
                                "steps": settings.total_steps(len(shard)), "partition-id": partition, "worker-pid": os.getpid()})
        arrays = ArrayRecord({name: value.cpu() for name, value in model.state_dict().items()})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)

    return app


def _flower(scenario: Scenario, policy: ClientPolicy) -> dict[str, Any]:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from strategies.simulation import backend_config

    logging.getLogger("flwr").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    per_round = len(sampled(scenario, 1))
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    images: Work = {}
    steps: Work = {}
    worker_pids: set[int] = set()

    class TimedFedAvg(FedAvg):
        """Flower's FedAvg, timestamping each round from its configure_train to its aggregate_evaluate."""

        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
            started[server_round] = time.perf_counter()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            for reply in replies:
                if not reply.has_error():
                    metrics = reply.content["metrics"]
                    images.setdefault(str(server_round), {})[str(int(metrics["partition-id"]))] = int(metrics["images"])
                    steps.setdefault(str(server_round), {})[str(int(metrics["partition-id"]))] = int(metrics["steps"])
                    worker_pids.add(int(metrics["worker-pid"]))
            return super().aggregate_train(server_round, replies)

        def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
            result = super().aggregate_evaluate(server_round, replies)
            ended[server_round] = time.perf_counter()
            return result

    strategy = TimedFedAvg(fraction_train=scenario.fraction_train, fraction_evaluate=0.0, min_train_nodes=per_round,
                           min_evaluate_nodes=0, min_available_nodes=scenario.num_clients)
    base = scenario_base_model(scenario)
    initial = ArrayRecord({name: value.detach().cpu() for name, value in base.state_dict().items()})
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.start(grid=grid, initial_arrays=initial, num_rounds=scenario.num_server_rounds, timeout=scenario.round_timeout)

    run_simulation(server_app=server, client_app=flower_client_app(scenario, policy, client_threads(scenario)),
                   num_supernodes=scenario.num_clients, backend_config=backend_config(scenario, verbose=False))
    rounds = range(1, scenario.num_server_rounds + 1)
    missing = [number for number in rounds if number not in ended]
    if missing:
        raise FedheiError(f"plain Flower's simulation ended without rounds {missing}; run with a smaller scenario to see why")
    return {"round-seconds": [ended[number] - started[number] for number in rounds], "images": images, "steps": steps,
            "workers": simulation_workers(scenario), "worker-processes": len(worker_pids)}


def _child(side: str, scenario: Scenario, policy: ClientPolicy, folder: Path) -> None:
    """One side in a fresh interpreter; its figures go to ``folder/<side>.json``, a user error to ``<side>.error``."""
    try:
        if side == SIMULATION:
            _simulation(scenario, folder / "simulation")
            return
        figures = {BARE: _bare, PLAIN: _plain, FLOWER: _flower}[side](scenario, policy)
    except FedheiError as error:
        (folder / f"{side}.error").write_text(str(error), encoding="utf-8")
        sys.exit(2)
    atomic.write_json(folder / f"{side}.json", figures)


def _start(side: str, scenario: Scenario, folder: Path) -> multiprocessing.process.BaseProcess:
    """One side in a fresh child process, with the clients' policy as the scenario's strategy sets it (looked up here,
    so that the loops' processes never import Flower)."""
    print(f"per_client: the {side}, {scenario.num_server_rounds} rounds", file=sys.stderr)
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(side, scenario, fedavg_policy(scenario), folder))
    child.start()
    return child


def _failed(side: str, folder: Path, exitcode: int | None) -> FedheiError:
    error = folder / f"{side}.error"
    if error.is_file():
        return FedheiError(f"{side}: {error.read_text(encoding='utf-8')}")
    return FedheiError(f"the {side} side failed (exit status {exitcode}); its error is printed above")


def measure_side(side: str, scenario: Scenario, folder: Path) -> dict[str, Any]:
    """Run the bare loop, the plain loop or plain Flower in a child process; its figures."""
    child = _start(side, scenario, folder)
    child.join()
    if child.exitcode != 0:
        raise _failed(side, folder, child.exitcode)
    return json.loads((folder / f"{side}.json").read_text(encoding="utf-8"))


def stop_tree(pid: int) -> None:
    """Kill a process and every process under it, and wait until none runs.

    SIGKILL, since nothing of them is kept and Ray's SIGTERM handlers print a stack trace each.
    """
    try:
        tree = process_tree(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    wait_until_stopped(tree, GRACE_SECONDS)


def measure_simulation(scenario: Scenario, folder: Path) -> dict[str, Any]:
    """Run ``fedhei run``'s path in a child process until its checkpoint holds the last round, then end it (and Ray)
    before its final export; the seconds and images of every round, as the server recorded them."""
    from strategies.checkpoint import CHECKPOINT_FILE, ServerCheckpoint

    path = folder / "simulation" / CHECKPOINT_FILE
    child = _start(SIMULATION, scenario, folder)
    assert child.pid is not None
    seen = 0.0
    checkpoint = None
    try:
        while True:
            modified = path.stat().st_mtime if path.is_file() else 0.0
            if modified != seen:
                seen, checkpoint = modified, ServerCheckpoint.load(path.parent)
                if checkpoint.completed_round >= scenario.num_server_rounds:
                    break
            if not child.is_alive():
                if child.exitcode != 0:
                    raise _failed(SIMULATION, folder, child.exitcode)
                break
            time.sleep(POLL_SECONDS)
    finally:
        stop_tree(child.pid)
        child.join()
    if checkpoint is None or checkpoint.completed_round < scenario.num_server_rounds:
        raise FedheiError(f"the simulation ended without a checkpoint of round {scenario.num_server_rounds}")
    state = checkpoint.strategy_state
    rounds = {int(entry["round"]): entry for entry in state["rounds"]}
    return {
        "round-seconds": [float(state["timings"][str(number)]) for number in sorted(rounds)],
        "images": {str(number): {str(int(row["client"])): int(row["examples"]) for row in entry["clients"]}
                   for number, entry in sorted(rounds.items())},
        "workers": simulation_workers(scenario),
    }


# -- the figures ---------------------------------------------------------------------------------------------


def timed(side: Mapping[str, Any]) -> dict[str, float]:
    """A side's round and client-round, mean over rounds 2..R, and its images and steps per client-round."""
    rounds = [str(number) for number in range(2, len(side["round-seconds"]) + 1)]
    round_seconds = float(np.mean(side["round-seconds"][1:]))
    clients = float(np.mean([len(side["images"].get(number, {})) for number in rounds]))
    images = [count for number in rounds for count in side["images"].get(number, {}).values()]
    steps = [count for number in rounds for count in side.get("steps", {}).get(number, {}).values()]
    return {"round": round_seconds, "clients": clients, "client-round": round_seconds / clients if clients else float("nan"),
            "images": float(np.mean(images)) if images else float("nan"), "steps": float(np.mean(steps)) if steps else float("nan")}


def same_work(sides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Whether the bare loop, the plain loop and the simulation trained the same clients on the same images every
    round; the first differences otherwise."""
    reference = sides[BARE]["images"]
    differing = [f"{name}, round {number}" for name in (PLAIN, SIMULATION)
                 for number in sorted(set(reference) | set(sides[name]["images"]), key=int)
                 if sides[name]["images"].get(number) != reference.get(number)]
    return {"identical": not differing, "differing": differing[:10]}


def summarize(scenario: Scenario, sides: dict[str, dict[str, Any]], bar: float) -> dict[str, Any]:
    figures = {name: timed(side) for name, side in sides.items()}
    workers = simulation_workers(scenario)
    bare, plain, simulation, flower = (figures[name]["round"] for name in SIDES)
    clients = figures[SIMULATION]["clients"]
    split = {
        "compute": (bare, bare / workers),
        "fedhei in process": (plain - bare, (plain - bare) / workers),
        "Flower's messages and Ray": (simulation - plain, simulation - plain / workers),
    }
    return {
        "scenario": scenario.to_mapping(),
        "clients-per-round": len(sampled(scenario, 1)),
        "simulation-workers": workers,
        "sides": sides,
        "figures": figures,
        "split": {part: {"raw-round": raw, "round-on-workers": spread, "client-round-on-workers": spread / clients,
                         "share": spread / simulation} for part, (raw, spread) in split.items()},
        "verdicts": {
            "simulation-faster-than-plain-flower": simulation < flower,
            "overhead-bar": bar,
            "simulation-over-compute": figures[SIMULATION]["client-round"] / (figures[BARE]["client-round"] / workers),
            "simulation-within-bar": figures[SIMULATION]["client-round"] <= bar * figures[BARE]["client-round"] / workers,
        },
        "same-work": same_work(sides),
    }


def _number(value: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(value) else f"{value:.{digits}f}"


SIDE_COLUMNS = ("side", "clients at once", "s per round", "s per client-round", "images per client-round",
                "steps per client-round", "x compute on the same workers")


def side_rows(summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The sides' table, as text: the same for the terminal and for markdown."""
    compute = summary["figures"][BARE]["round"]
    rows = []
    for name in SIDES:
        figures, workers = summary["figures"][name], int(summary["sides"][name]["workers"])
        rows.append((f"{name} ({WHAT[name]})", str(workers), _number(figures["round"]), _number(figures["client-round"], 4),
                     _number(figures["images"], 1), _number(figures["steps"], 1),
                     f"{figures['round'] / (compute / workers):.2f}"))
    return rows


def split_columns(summary: Mapping[str, Any]) -> tuple[str, ...]:
    workers = summary["simulation-workers"]
    return ("part of a simulation round", "s per round, raw difference", f"s per round on {workers} workers",
            f"s per client-round on {workers} workers", "share of the simulation round")


def split_rows(summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    workers = summary["simulation-workers"]
    labels = {"compute": f"compute: bare (/ {workers})", "fedhei in process": f"fedhei in process: plain - bare (/ {workers})",
              "Flower's messages and Ray": f"Flower's messages and Ray: simulation - plain (/ {workers})"}
    return [(labels[part], _number(values["raw-round"]), _number(values["round-on-workers"]),
             _number(values["client-round-on-workers"], 4), f"{100 * values['share']:.0f}%")
            for part, values in summary["split"].items()]


def verdict_lines(summary: Mapping[str, Any]) -> list[str]:
    figures, verdicts, workers = summary["figures"], summary["verdicts"], summary["simulation-workers"]
    compute = figures[BARE]["client-round"] / workers
    same = summary["same-work"]
    work = (f"yes ({_number(figures[BARE]['images'], 1)} images, {_number(figures[BARE]['steps'], 1)} steps per client-round)"
            if same["identical"] else f"NO: {', '.join(same['differing'])}")
    return [
        f"simulation round < plain Flower round? {'yes' if verdicts['simulation-faster-than-plain-flower'] else 'no'} "
        f"({figures[SIMULATION]['round']:.3f} s against {figures[FLOWER]['round']:.3f} s)",
        f"simulation per client-round <= {verdicts['overhead-bar']:g} x compute on the same {workers} workers? "
        f"{'yes' if verdicts['simulation-within-bar'] else 'no'} ({figures[SIMULATION]['client-round']:.4f} s against "
        f"{compute:.4f} s: {verdicts['simulation-over-compute']:.2f} x)",
        f"bare loop, plain loop and simulation trained the same clients on the same images every round? {work}",
    ]


def _title(summary: Mapping[str, Any]) -> str:
    scenario = summary["scenario"]
    return (f"{scenario['name']}: what a training round costs per client ({scenario['num-clients']} clients, "
            f"{summary['clients-per-round']} a round, rounds 2..{scenario['num-server-rounds']} timed)")


def _caption(summary: Mapping[str, Any]) -> str:
    machine = summary["machine"]
    before, after = (", ".join(f"{value:.1f}" for value in machine[key]) for key in ("load-before", "load-after"))
    note = f"{summary['caption']}; " if summary.get("caption") else ""
    return (f"{note}plain Flower's clients ran in {summary['sides'][FLOWER]['worker-processes']} Ray worker processes; "
            f"{machine['cpus']} CPUs, load average (1, 5, 15 min) {before} before and {after} after: wall times "
            "compare only on an otherwise idle machine")


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> Table:
    table = Table(title=title, caption=caption)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * (len(columns) - 1),
            *("| " + " | ".join(row) + " |" for row in rows)]


def markdown(summary: Mapping[str, Any]) -> str:
    lines = [_title(summary), "", *_markdown_table(SIDE_COLUMNS, side_rows(summary)), "",
             *_markdown_table(split_columns(summary), split_rows(summary)), ""]
    lines += [f"- {line}" for line in verdict_lines(summary)]
    lines += ["", _caption(summary)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = list(os.getloadavg())
    try:
        scenario = training_only(load_scenario(args.scenario, args.overrides, args.data), args.rounds)
        with tempfile.TemporaryDirectory(prefix="fedhei-per-client-") as folder:
            sides = {name: measure_side(name, scenario, Path(folder)) for name in (BARE, PLAIN)}
            sides[SIMULATION] = measure_simulation(scenario, Path(folder))
            sides[FLOWER] = measure_side(FLOWER, scenario, Path(folder))
    except FedheiError as error:
        print(f"per_client: error: {error}", file=sys.stderr)
        return 2
    summary = summarize(scenario, sides, args.overhead_bar)
    summary.update(caption=args.caption, overrides=list(args.overrides), rounds=args.rounds,
                   machine={"cpus": os.cpu_count(), "load-before": load_before, "load-after": list(os.getloadavg()),
                            "torch": torch.__version__})
    stdout.print(_table(_title(summary), SIDE_COLUMNS, side_rows(summary)))
    stdout.print(_table("where a simulation round goes", split_columns(summary), split_rows(summary), _caption(summary)))
    for line in verdict_lines(summary):
        stdout.print(line, markup=False, highlight=False)
    if args.markdown:
        print(markdown(summary))
    if args.json:
        atomic.write_json(args.json, summary)
        print(f"figures: {args.json}")
    return 0 if summary["same-work"]["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())

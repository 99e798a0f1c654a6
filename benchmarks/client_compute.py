"""What a scenario's clients compute, with nothing around it: the floor under a run's wall time.

A run's wall time is its clients' work plus what the simulator spends around it (Ray,
messages, the roll call, the report). This script does the clients' work alone, in
this process on ``client-num-cpus`` threads, with the functions the Flower client calls:
rounds 1 and 2 (``train_round`` for the clients each samples to train, then
``evaluate_round`` for those it samples to evaluate, from the scenario's base model,
each client's state carried from round 1 to round 2),
then every client's final phase (``final_model`` and ``export_model`` into a temporary
directory). Later rounds cost what round 2 costs (a strategy that scores layers does so
in round 1 and then on its reclassify schedule), so the run's rounds are estimated as round 1 plus
``num-server-rounds - 1`` times round 2; each phase is also divided by the workers a local
simulation runs at once, the best those workers could do.

    python benchmarks/client_compute.py scenarios/quickstart.toml
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.table import Table

from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.errors import FedheiError
from fedhei.experiments.plain import plain_server
from fedhei.federation.client_round import Arrays, ClientJob, blank_copy, evaluate_round, train_round
from fedhei.federation.export import export_model, final_model
from fedhei.federation.policy import ClientPolicy
from fedhei.federation.sampling import SAMPLE_EVALUATE, SAMPLE_TRAIN, sample_clients
from fedhei.federation.state import ClientState
from fedhei.reporting.tables import stdout
from strategies import resolve_strategy
from strategies.simulation import local_workers


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    return parser.parse_args(argv)


def timed_rounds(scenario: Scenario, policy: ClientPolicy, base: Arrays) -> tuple[float, float]:
    """Seconds of rounds 1 and 2 for their sampled clients, one client after another."""
    model = blank_copy(scenario.model)
    states: dict[int, ClientState] = {}
    seconds = []
    for server_round in (1, 2):
        started = time.perf_counter()
        for client in sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_train, server_round, SAMPLE_TRAIN):
            _, _, states[client] = train_round(ClientJob(scenario, policy, client, server_round), base, states.get(client),
                                               into=model)
        if scenario.fraction_evaluate > 0:
            for client in sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_evaluate, server_round,
                                         SAMPLE_EVALUATE):
                evaluate_round(ClientJob(scenario, policy, client, server_round), base, states.get(client), into=model)
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def timed_final_phase(scenario: Scenario, policy: ClientPolicy, base: Arrays) -> float:
    """Seconds of every client's final phase (last local round, evaluations, model file) from the base model."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedhei-client-compute-") as run_dir:
        for client in range(scenario.num_clients):
            job = ClientJob(scenario, policy, client, scenario.num_server_rounds, complete_schedule=True)
            model, state = final_model(job, base, None)
            export_model(job, model, state, Path(run_dir))
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, args.overrides, args.data)
        policy = resolve_strategy(scenario.strategy).policy
        base = plain_server(scenario, policy).current
    except FedheiError as error:
        print(f"client_compute: error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, int(scenario.client_num_cpus)))
    first, later = timed_rounds(scenario, policy, base)
    final = timed_final_phase(scenario, policy, base)
    rounds = first + (scenario.num_server_rounds - 1) * later
    workers = local_workers(scenario)
    table = Table(title=f"{scenario.name}: what its clients compute ({scenario.num_clients} clients, "
                        f"{torch.get_num_threads()} thread(s), {workers} workers in a local simulation)")
    for column in ("phase", "s, one client after another", f"s on {workers} workers (/ {workers})"):
        table.add_column(column)
    for phase, seconds in (("round 1", first), ("round 2 (as each later round)", later),
                           (f"{scenario.num_server_rounds} rounds (round 1 + later x {scenario.num_server_rounds - 1})", rounds),
                           ("final phase, every client", final), ("rounds and final phase", rounds + final)):
        table.add_row(phase, f"{seconds:.1f}", f"{seconds / workers:.1f}")
    stdout.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

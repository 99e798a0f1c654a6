"""A federation without Flower or Ray: the server's rounds as a plain loop over fedhei's core functions.

What the simulation costs beyond its training shows only against the same work done
plainly, in one process: the same clients drawn from the same seed streams, each one's
round (``train_round``) with its state kept in memory, the same download (only what a
returning client shares), the same decode and masked average in partition order, the
same per-round evaluation and the same final export of every user's model. The same
scenario and seed give the same per-client final accuracy as ``fedhei run``
(``benchmarks/scale.py`` checks it, and tests/test_trust.py).

Only what the base strategy's server does is replayed: a scenario with injected
faults or a consensus layer set is refused, and so is a strategy with server hooks of
its own (the caller checks that, since the core does not import the strategies).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob, evaluate_round, prepare, train_round
from fedhei.federation.export import export_model, final_model
from fedhei.federation.policy import ClientPolicy
from fedhei.federation.sampling import SAMPLE_EVALUATE, SAMPLE_TRAIN, sample_clients
from fedhei.federation.server import FederationServer, scenario_base_model
from fedhei.federation.state import ClientState
from fedhei.federation.wire import decode
from fedhei.models.adapters import adapter_for


@dataclass
class PlainRun:
    """Wall-clock seconds of each phase, and what the clients reported (by partition id)."""

    setup_seconds: float = 0.0
    round_seconds: dict[int, float] = field(default_factory=dict)
    # The export's last local rounds (training, scoring, the rest of the schedule) and the rest of it
    # (evaluation, the weighted full-test evaluation, writing the file and manifest).
    final_round_seconds: float = 0.0
    export_seconds: float = 0.0
    # Per round: each evaluated client's accuracy.
    evaluated: dict[int, dict[int, float]] = field(default_factory=dict)
    # Per exported client: its manifest's numbers.
    finals: dict[int, dict[str, float]] = field(default_factory=dict)


def train_plain_round(scenario: Scenario, policy: ClientPolicy, server: FederationServer, states: dict[int, ClientState],
                      server_round: int) -> None:
    """One round's training, in process: every sampled client's round in partition order, then the server's step;
    each client's state is kept in ``states``."""
    updates = []
    for client in sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_train, server_round, SAMPLE_TRAIN):
        job = ClientJob(scenario, policy, client, server_round)
        update, metrics, states[client] = train_round(job, server.download(client), states.get(client))
        updates.append((float(metrics["num-examples"]), decode(update, server.current)))
        roles = states[client].roles
        server.joined(client, roles.personalized() if roles is not None else ())
    server.aggregate(updates)


def plain_server(scenario: Scenario, policy: ClientPolicy) -> FederationServer:
    """A plain federation's server at round 0 (the scenario's base model), with every client's data prepared."""
    base = scenario_base_model(scenario)
    server = FederationServer(policy, {name: value.detach().cpu().numpy() for name, value in base.named_parameters()},
                              adapter_for(base).head_parameters(base), scenario.server_settings())
    prepare(scenario)
    return server


def _check(scenario: Scenario) -> None:
    if scenario.fault_crash or scenario.fault_hang or scenario.fault_drop:
        raise FedheiError("the plain loop replays a federation without failures; set fault-crash, fault-hang and "
                          "fault-drop to 0")
    if scenario.shared_layers == "consensus":
        raise FedheiError("the plain loop does not replay the server's consensus vote; use shared-layers = \"per-client\"")
    if scenario.seeds:
        raise FedheiError(f"seeds is '{scenario.seeds}'; the plain loop runs one seed: give seed alone")


def run_plain(scenario: Scenario, policy: ClientPolicy, run_dir: Path, threads: int,
              export_clients: int | None = None, on_phase: Callable[[str], None] | None = None) -> PlainRun:
    """Every round, then the final export of the first ``export_clients`` users (all by default) into ``run_dir``.

    ``threads`` is torch's thread count for the whole loop; a simulated client computes
    with ``client-num-cpus`` threads, and only the same count gives the same floating-point sums.
    """
    _check(scenario)
    torch.set_num_threads(threads)
    report = on_phase or (lambda _: None)
    run = PlainRun()
    started = time.perf_counter()
    server = plain_server(scenario, policy)
    states: dict[int, ClientState] = {}
    run.setup_seconds = time.perf_counter() - started
    for server_round in range(1, scenario.num_server_rounds + 1):
        report(f"round {server_round}")
        started = time.perf_counter()
        train_plain_round(scenario, policy, server, states, server_round)
        run.evaluated[server_round] = {}
        if scenario.fraction_evaluate > 0:
            for client in sample_clients(scenario.seed, scenario.num_clients, scenario.fraction_evaluate, server_round,
                                         SAMPLE_EVALUATE):
                job = ClientJob(scenario, policy, client, server_round)
                run.evaluated[server_round][client] = evaluate_round(job, server.download(client), states.get(client))["accuracy"]
        run.round_seconds[server_round] = time.perf_counter() - started
    report("export")
    for client in range(scenario.num_clients if export_clients is None else min(export_clients, scenario.num_clients)):
        job = ClientJob(scenario, policy, client, scenario.num_server_rounds)
        started = time.perf_counter()
        model, state = final_model(job, server.download(client), states.get(client))
        trained = time.perf_counter()
        run.finals[client] = export_model(job, model, state, run_dir)
        run.final_round_seconds += trained - started
        run.export_seconds += time.perf_counter() - started
    return run

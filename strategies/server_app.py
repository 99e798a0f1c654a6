"""The Flower ServerApp: pick the strategy, run the rounds, collect every user's final model.

``flwr run .`` reads the scenario from the run config; ``fedhei run`` builds the same
app in-process with :func:`server_app_for`, so both paths go through
:func:`run_federation`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.reporting.results import summarize, write_run
from fedhei.training.pretrain import base_model
from strategies import resolve_strategy

log = logging.getLogger(__name__)
ROUND_TIMEOUT_S = 3600.0


def run_federation(grid: Grid, scenario: Scenario, run_dir: Path) -> dict:
    """Run every round, then the final per-client export, and write results.json and report.md."""
    strategy_class = resolve_strategy(scenario.strategy)
    data = load_cifar10_cached(scenario.data_source or None)
    model = base_model(data, scenario.pretrain_spec(), scenario.base_model, scenario.device)
    initial = ArrayRecord({name: Array(value.detach().cpu().numpy()) for name, value in model.named_parameters()})
    run_dir = run_dir.resolve()
    strategy = strategy_class(scenario, str(run_dir), fraction_evaluate=scenario.fraction_evaluate)
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=scenario.num_server_rounds, timeout=ROUND_TIMEOUT_S)
    clients = strategy.finalize(grid, result.arrays, scenario.num_server_rounds, ROUND_TIMEOUT_S)
    rounds = [strategy.rounds[number].to_json() for number in sorted(strategy.rounds)]
    payload = {
        "scenario": scenario.to_mapping(),
        "strategy": scenario.strategy,
        "policy": strategy.policy.to_config(),
        "consensus-generic": strategy.consensus_generic,
        "rounds": rounds,
        "clients": clients,
        "summary": summarize(rounds, clients),
    }
    write_run(run_dir, payload)
    return payload


def server_app_for(scenario: Scenario, run_dir: Path) -> ServerApp:
    """A ServerApp bound to an already parsed scenario (the in-process ``fedhei run`` path)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, scenario, run_dir)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    scenario = Scenario.from_mapping(dict(context.run_config))
    run_federation(grid, scenario, scenario.run_dir())

"""Pilot: a federation's global-model curve, fast, to choose a scenario's optimizer, rates and rounds.

The server's rounds as one in-process loop over fedhei's own core (the same client
rounds, the same decoding, masked average and server step as ``fedhei run``, no
Flower, no Ray), measuring only what a pilot needs: the global model on the whole
test set, the base as round 0, every ``global-eval-every`` rounds. No client is
evaluated and nothing is exported, so a pilot costs its training and a few test-set
passes. The figures differ from a ``fedhei run`` of the same scenario only in
floating-point order (torch uses ``--threads`` here, one thread per client there).

With ``--centralized STEPS``, it trains the base instead on every client's shard
pooled, with the scenario's client optimizer, rate and batch size, for STEPS steps,
measured every ``--every`` steps: the reference a federation is held against.

    python benchmarks/pilot.py scenarios/quickstart.toml --set strategy='"fedavg"' --set lr=0.0001
    python benchmarks/pilot.py scenarios/quickstart.toml --set lr=0.0001 --centralized 1500 --every 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import torch

from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.errors import FedheiError
from fedhei.experiments.plain import plain_server, train_plain_round
from fedhei.federation.client_round import pooled_training_data
from fedhei.federation.server import GLOBAL_ACCURACY, evaluate_global, scenario_base_model
from fedhei.federation.state import ClientState
from fedhei.training.loops import train
from strategies import resolve_strategy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--centralized", type=int, default=0, metavar="STEPS",
                        help="train the base on the pooled shards for STEPS steps instead of federating")
    parser.add_argument("--every", type=int, default=50, help="with --centralized: measure every this many steps")
    return parser.parse_args(argv)


def federated_curve(scenario: Scenario) -> list[tuple[int, float]]:
    """(round, global accuracy) from the base (round 0) to the last round."""
    policy = resolve_strategy(scenario.strategy).policy
    server = plain_server(scenario, policy)
    curve = [(0, evaluate_global(scenario, server.current)[GLOBAL_ACCURACY])]
    states: dict[int, ClientState] = {}
    every = scenario.global_eval_every or scenario.num_server_rounds
    for server_round in range(1, scenario.num_server_rounds + 1):
        train_plain_round(scenario, policy, server, states, server_round)
        if server_round % every == 0 or server_round == scenario.num_server_rounds:
            curve.append((server_round, evaluate_global(scenario, server.current)[GLOBAL_ACCURACY]))
            print(f"round {server_round}: {100 * curve[-1][1]:.2f}%", file=sys.stderr, flush=True)
    return curve


def centralized_curve(scenario: Scenario, steps: int, every: int) -> list[tuple[int, float]]:
    """(step, test accuracy) of the base trained on every client's shard pooled, the rate held constant."""
    model = scenario_base_model(scenario)
    pooled = pooled_training_data(scenario, model)

    def accuracy() -> float:
        return evaluate_global(scenario, {name: value.detach().cpu().numpy() for name, value in model.named_parameters()})[
            GLOBAL_ACCURACY]

    curve = [(0, accuracy())]
    settings = scenario.centralized_settings(every, decay_in_call=False)
    for chunk in range(steps // every):
        train(model, pooled, settings, seed=chunk)
        curve.append(((chunk + 1) * every, accuracy()))
        print(f"step {curve[-1][0]}: {100 * curve[-1][1]:.2f}%", file=sys.stderr, flush=True)
    return curve


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        scenario = load_scenario(args.scenario, args.overrides, args.data)
        curve = centralized_curve(scenario, args.centralized, args.every) if args.centralized else federated_curve(scenario)
    except FedheiError as error:
        print(f"pilot: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"settings": args.overrides, "x": [x for x, _ in curve],
                      "accuracy": [round(100 * value, 2) for _, value in curve],
                      "seconds": round(time.perf_counter() - started)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

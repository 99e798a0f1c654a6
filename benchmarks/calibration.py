"""Calibration: does the simulator reproduce what the field knows about federated learning?

Before a claim about a method, three known results, each from real runs (``fedhei bench``
into ``--out``/<check>, continued where a run is missing, so a stopped calibration resumes):

- ``iid``: FedAvg with every client on an IID split ends within ``--margin`` of centralized
  training on the same number of examples (McMahan et al. 2017). The centralized model
  starts from the same base and trains on the pooled shards of all clients, in batches of
  the clients' size, for as many examples as the federation's clients trained on in all,
  with its own recipe (``--reference-optimizer``, ``--reference-lr``,
  ``--reference-weight-decay``: by default AdamW at 3e-4, the best of the centralized
  pilots, so the reference is the strongest measured one and not the clients' local
  optimizer, which the server's optimizer may complete), and both are measured on the whole
  test set.
- ``dirichlet``: on a Dirichlet(0.3) split, FedAvg's global model ends above its base.
- ``cross-device``: many clients with little data each, a few dozen per round, every client
  joining many times: local training against the personalized methods, paired client by client
  (the bench's own paired table, against local and FedAvg-FT).

The first two compare models on the same 10,000 test images: each seed contributes its
per-image differences (1 correct, 0 wrong, model minus reference), and the interval is the
project's two-stage bootstrap (seeds, then images), so it rests on every image of every seed.

    python benchmarks/calibration.py [--only iid,dirichlet,cross-device] [--seeds 0,1,2] [--out runs/calibration]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fedhei.config.scenario import Scenario, load_scenario
from fedhei.data.cifar10 import Split, load_cifar10_cached
from fedhei.errors import FedheiError
from fedhei.experiments.layout import seed_dir
from fedhei.federation.client_round import pooled_training_data
from fedhei.federation.server import scenario_base_model
from fedhei.models.registry import create_model
from fedhei.reporting.comparison import find_runs, paired_differences
from fedhei.reporting.intervals import Interval, bootstrap
from fedhei.reporting.results import RESULTS_FILE
from fedhei.reporting.tables import stdout
from fedhei.training.device import pick_device
from fedhei.training.loops import batches_for, correct_per_example, train
from fedhei.training.optimizers import ADAMW, CLIENT_OPTIMIZERS, LrSchedule
from strategies.checkpoint import ServerCheckpoint
from strategies.simulation import bench_command

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
CHECKS = {
    "iid": SCENARIOS / "calibration-iid.toml",
    "dirichlet": SCENARIOS / "calibration-dirichlet-0.3.toml",
    "cross-device": SCENARIOS / "cross-device.toml",
}
CROSS_DEVICE_STRATEGIES = ("local", "fedavg-ft", "fedper", "fedrep", "ditto", "fedhei")


@dataclass(frozen=True)
class SeedFigures:
    seed: int
    base: float
    federated: float
    reference: float
    # Per test image: federated minus the reference model (1, 0 or -1).
    differences: np.ndarray


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CHECKS), help=f"checks to run, of {', '.join(CHECKS)}")
    parser.add_argument("--seeds", default="0,1,2", help="the seeds every check repeats over")
    parser.add_argument("--out", type=Path, default=Path("runs/calibration"), help="where each check's bench goes")
    parser.add_argument("--data", default="", help="CIFAR-10 source (sets data-source)")
    parser.add_argument("--cross-device-strategies", default=",".join(CROSS_DEVICE_STRATEGIES),
                        help="cross-device: the strategies benched (local and fedavg-ft are the references every "
                             "other is paired against)")
    parser.add_argument("--margin", type=float, default=2.0, help="IID: points FedAvg may trail centralized training by")
    parser.add_argument("--reference-optimizer", choices=CLIENT_OPTIMIZERS, default=ADAMW,
                        help="IID: the centralized reference's optimizer (default adamw)")
    parser.add_argument("--reference-lr", type=float, default=3e-4, help="IID: the centralized reference's rate (default 3e-4)")
    parser.add_argument("--reference-weight-decay", type=float, default=0.05,
                        help="IID: the centralized reference's weight decay (default 0.05)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of every check's scenario (e.g. num-server-rounds=4 for a smoke run)")
    args = parser.parse_args(argv)
    args.checks = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.checks if name not in CHECKS]
    if unknown or not args.checks:
        parser.error(f"--only {args.only!r}: choose from {', '.join(CHECKS)}")
    args.cross_device_strategies = [name.strip() for name in args.cross_device_strategies.split(",") if name.strip()]
    missing = [name for name in ("local", "fedavg-ft") if name not in args.cross_device_strategies]
    if missing:
        parser.error(f"--cross-device-strategies must include {', '.join(missing)}: every verdict is against them")
    return args


def run_bench(check: str, strategies: Sequence[str], args: argparse.Namespace) -> Path:
    """The check's bench, started or continued in --out/<check>."""
    out = args.out / check
    overrides = [*args.overrides, f"seeds={args.seeds}"]
    continuing = out.is_dir() and any(out.rglob(RESULTS_FILE))
    bench_command(CHECKS[check], overrides, list(strategies), None if continuing else out, args.data, quiet=True,
                  resume=out if continuing else None)
    return out


def test_images(scenario: Scenario) -> Split:
    return load_cifar10_cached(scenario.data_source or None).test


def correct(scenario: Scenario, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per test image, whether the model with these parameters gets it right."""
    model = create_model(scenario.model)
    model.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in arrays.items()}, strict=False)
    model.to(pick_device(scenario.device))
    return correct_per_example(model, batches_for(model, test_images(scenario)))


def base_arrays(scenario: Scenario) -> dict[str, np.ndarray]:
    model = scenario_base_model(scenario)
    return {name: value.detach().cpu().numpy() for name, value in model.named_parameters()}


def examples_trained(run_dir: Path) -> float:
    """Every example the federation's clients trained on, over all rounds (repeats counted)."""
    payload = json.loads((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    return sum(float(row.get("examples", 0.0)) for record in payload["rounds"] for row in record["clients"]
               if row["client"] in record["aggregated"])


def reference_scenario(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """The scenario with the centralized reference's recipe in place of the clients' optimizer, at a constant rate."""
    return replace(scenario, client_optimizer=args.reference_optimizer, lr=args.reference_lr,
                   weight_decay=args.reference_weight_decay, lr_schedule=LrSchedule.CONSTANT.value)


def centralized(scenario: Scenario, examples: float) -> dict[str, np.ndarray]:
    """The base trained on every client's shard pooled, for ``examples`` examples, with the scenario's client recipe."""
    if scenario.lr_schedule == LrSchedule.EXPONENTIAL:
        raise FedheiError("the centralized reference follows a constant or cosine rate; use lr-schedule constant or cosine")
    model = create_model(scenario.model)
    model.load_state_dict({name: torch.from_numpy(value) for name, value in base_arrays(scenario).items()}, strict=False)
    settings = scenario.centralized_settings(max(1, round(examples / scenario.batch_size)),
                                             decay_in_call=scenario.lr_schedule == LrSchedule.COSINE)
    train(model, pooled_training_data(scenario, model), settings, seed=scenario.seed, device=pick_device(scenario.device))
    return {name: value.detach().cpu().numpy() for name, value in model.named_parameters()}


def seed_figures(scenario: Scenario, run_dir: Path, reference_recipe: Scenario | None) -> SeedFigures:
    """The seed's base, final global model and reference (the centralized model when given its recipe, else the base)."""
    final = correct(scenario, ServerCheckpoint.load(run_dir).arrays)
    base = correct(scenario, base_arrays(scenario))
    reference = base if reference_recipe is None else correct(scenario, centralized(reference_recipe, examples_trained(run_dir)))
    return SeedFigures(scenario.seed, float(base.mean()), float(final.mean()), float(reference.mean()), final - reference)


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def points(interval: Interval) -> str:
    return f"{100 * interval.estimate:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"


def federated_check(check: str, args: argparse.Namespace) -> str:
    """IID against centralized training, or Dirichlet(0.3) against the base: a table per seed and the verdict."""
    started = time.perf_counter()
    bench = run_bench(check, ["fedavg"], args)
    scenario = load_scenario(CHECKS[check], [*args.overrides, f"seeds={args.seeds}"], args.data)
    iid = check == "iid"
    rows = [seed_figures(scenario.for_seed(seed), seed_dir(bench / "fedavg", seed),
                         reference_scenario(scenario.for_seed(seed), args) if iid else None)
            for seed in scenario.run_seeds()]
    difference = bootstrap([row.differences for row in rows])
    reference = "centralized" if iid else "base"
    lines = [f"## {check}: {CHECKS[check].name}", "",
             f"| seed | base | FedAvg global | {'centralized, same examples | ' if iid else ''}FedAvg - {reference} |",
             f"| --- | --- | --- | {'--- | ' if iid else ''}--- |"]
    for row in rows:
        lines.append(f"| {row.seed} | {pct(row.base)} | {pct(row.federated)} | "
                     f"{pct(row.reference) + ' | ' if iid else ''}{100 * (row.federated - row.reference):+.1f} |")
    lines += ["", f"FedAvg - {reference}, over {len(rows)} seed{'s' if len(rows) != 1 else ''} x {len(rows[0].differences):,} test images (95% interval, "
              f"two-stage bootstrap): {points(difference)} points."]
    if iid:
        lines.append(f"The centralized reference: {args.reference_optimizer} at {args.reference_lr:g} (weight decay "
                     f"{args.reference_weight_decay:g}), constant, batch {scenario.batch_size}, on the pooled shards.")
        verdict = "holds" if difference.low > -args.margin / 100 else "fails"
        lines.append(f"Verdict: FedAvg within {args.margin:g} points of centralized training {verdict} "
                     f"(the interval's low end {100 * difference.low:+.1f}).")
    else:
        verdicts = {"above": "the global model ends above its base", "below": "the global model ends below its base",
                    "neither": "the global model's difference from its base is not resolved"}
        side = "above" if difference.low > 0 else "below" if difference.high < 0 else "neither"
        lines.append(f"Verdict: {verdicts[side]}.")
    lines.append(f"({time.perf_counter() - started:.0f} s for this check, runs reused where present)")
    return "\n".join(lines)


def cross_device_check(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    strategies = args.cross_device_strategies
    bench = run_bench("cross-device", strategies, args)
    runs = find_runs([bench / name for name in strategies])
    metric = "accuracy"
    lines = ["## cross-device: " + CHECKS["cross-device"].name, "", "| strategy | against | difference, points [95%] | verdict |",
             "| --- | --- | --- | --- |"]
    for row in paired_differences(runs, metric, ("local", "fedavg-ft")):
        lines.append(f"| {row.strategy} | {row.reference} | {points(row.difference)} | {row.difference.verdict()} |")
    lines += ["", f"Per client, each client's final accuracy on its own test split, {len(runs)} runs; the bench's own "
              f"tables and figures: {bench / 'bench.md'}.", f"({time.perf_counter() - started:.0f} s for this check)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sections = [cross_device_check(args) if check == "cross-device" else federated_check(check, args) for check in args.checks]
    except FedheiError as error:
        print(f"calibration: error: {error}", file=sys.stderr)
        return 2
    stdout.print("\n\n".join(sections), markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

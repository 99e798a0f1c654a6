"""Which scorers find the exhaustive layer roles, and for how many forward passes?

For a few users' models (the cached pre-trained base, fine-tuned on each client's
shard), runs the ``exhaustive`` scorer (one layer at a time, the reference) over a few
seeds, and against it: the ``sensing`` designs and the levers tried on them (the size
of the perturbation, one calibration batch per measurement, signed complement pairs,
the shared level, the solver), the single-signal scorers, and the fused scorers fitted
leave-one-client-out on the other clients' exhaustive scores. Per scorer and client it
prints role agreement with the exhaustive roles of the same seed (for each role rule
given; mean over seeds, and the worst seed), the Spearman rank correlation of the
scores, and the forward passes spent, beside three references: exhaustive against
itself on the next seed (its own noise, the most any scorer can reach), random roles,
and the free guess "earlier layers first".

    OMP_NUM_THREADS=1 python benchmarks/sensing_vs_exhaustive.py --base base.safetensors --client 10,0,15,3,18

Uses real CIFAR-10 when this machine has it, else the synthetic set (with a note).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from scipy.stats import spearmanr
from torch import nn

from fedhei import atomic
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10, make_synthetic
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError
from fedhei.method.roles import agreement, classify, random_roles
from fedhei.method.scoring import ExhaustiveScorer, FusedScorer, FusionExample, LayerScores, Scorer, SensingScorer, build_scorer
from fedhei.method.scoring.fusion import layer_features
from fedhei.reporting.tables import stdout
from fedhei.training.loops import batches_for, train
from fedhei.training.pretrain import base_model

# The scenario's settings where this benchmark has no flag of its own (sensing solver, fine-tuning).
DEFAULTS = Scenario()
SINGLE_SIGNALS = ("magnitude", "weight-entropy", "fisher", "activation", "attention-entropy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="", help="base-model checkpoint; default: the cached pre-train")
    parser.add_argument("--model", default="vit-tiny-c10")
    parser.add_argument("--pretrain-epochs", type=float, default=30.0)
    parser.add_argument("--data", default="", help="CIFAR-10 source; default: search the usual places, else synthetic")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--client", default="10,0,15,3,18", help="the users scored, comma separated")
    parser.add_argument("--fusion-clients", default="",
                        help="more clients whose exhaustive scores the fused scorers are also fitted on (not scored)")
    parser.add_argument("--finetune-epochs", type=float, default=1.0, help="personalize the base first (0: score the base)")
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--signal", default="loss")
    parser.add_argument("--prob", type=float, default=0.5, help="perturbation: random pruning ratio")
    parser.add_argument("--rules", default="top-fraction:0.25,relative:0.2",
                        help="role rules to compare under, as rule:threshold, comma separated")
    parser.add_argument("--levers", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the levers tried on the first (random) design")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Candidate:
    """A row of the table: how to build the scorer for one client (fused scorers need the others)."""

    label: str
    build: Callable[[int], Scorer]


def candidates(args: argparse.Namespace, fusion: dict[int, list[FusionExample]]) -> list[Candidate]:
    def sensing(**settings: Any) -> Callable[[int], Scorer]:
        return lambda client: SensingScorer(**{"signal": args.signal, "prob": args.prob, "solver": DEFAULTS.sensing_solver,
                                               **settings})

    rows = [
        Candidate("sensing, blocks, m = 0.3 L (default)", sensing(design="blocks", measurements=0.3)),
        Candidate("sensing, blocks, m = 0.5 L", sensing(design="blocks", measurements=0.5)),
        Candidate("sensing, random (first design), m = 0.36 L", sensing(design="random", measurements=0.36)),
        Candidate("sensing, random (first design), m = 0.5 L", sensing(design="random", measurements=0.5)),
    ]
    if args.levers:
        rows += [
            Candidate("  lever: random, perturbation prob 0.25", sensing(design="random", measurements=0.36, prob=0.25)),
            Candidate("  lever: random, 1 batch per measurement, m = 0.72 L",
                      sensing(design="random", measurements=0.72, rotate_batches=True)),
            Candidate("  lever: random, shared level (generic background)",
                      sensing(design="random", measurements=0.36, level="shared")),
            Candidate("  lever: random, omp solver", sensing(design="random", measurements=0.36, solver="omp")),
            Candidate("  lever: signed complement pairs, prob 0.1", sensing(design="signed", measurements=0.32, prob=0.1)),
            Candidate("  lever: blocks, 1 batch per measurement, m = 0.64 L",
                      sensing(design="blocks", measurements=0.64, rotate_batches=True)),
        ]
    rows += [Candidate(name, lambda client, name=name: build_scorer(name, DEFAULTS.scorer_settings())) for name in SINGLE_SIGNALS]
    rows += [Candidate(f"fused-{regressor} (leave-one-client-out)",
                       lambda client, regressor=regressor: FusedScorer(regressor, tuple(fusion[client]), f"fused-{regressor}"))
             for regressor in ("linear", "forest")]
    return rows


@dataclass
class User:
    client: int
    images: int
    model: nn.Module
    calibration: list[Any]
    exhaustive: list[LayerScores]


def personalize(base: nn.Module, data: Any, indices: np.ndarray, args: argparse.Namespace) -> tuple[nn.Module, list[Any]]:
    shard = batches_for(base, data.train, indices)
    model = copy.deepcopy(base)
    if args.finetune_epochs > 0:
        settings = replace(DEFAULTS.finetune_settings(), epochs=args.finetune_epochs, batch_size=args.batch_size)
        train(model, shard, settings, seed=0)
    return model, list(islice(shard.batches(args.batch_size, shuffle=True, seed=0), args.calibration_batches))


def _summary(values: dict[str, list[float]], correlation: list[float], passes: int) -> dict[str, Any]:
    return {"agreement": {name: float(np.mean(found)) for name, found in values.items()},
            "agreement-worst-seed": {name: float(np.min(found)) for name, found in values.items()},
            "spearman": float(np.nanmean(correlation)) if not np.isnan(correlation).all() else float("nan"),
            "forward-passes": passes}


def _compare(found: list[LayerScores], user: User, rules: list[tuple[str, float]]) -> dict[str, Any]:
    """Agreement and rank correlation of one scorer's scores (one per seed) with the reference."""
    values: dict[str, list[float]] = {f"{rule} {threshold:g}": [] for rule, threshold in rules}
    correlation = []
    for seed, scores in enumerate(found):
        for rule, threshold in rules:
            values[f"{rule} {threshold:g}"].append(
                agreement(classify(scores, rule, threshold), classify(user.exhaustive[seed], rule, threshold)))
        correlation.append(spearmanr(scores.scores, user.exhaustive[seed].scores).statistic if np.ptp(scores.scores) else np.nan)
    return _summary(values, correlation, max(scores.forward_passes for scores in found))


def _references(user: User, rules: list[tuple[str, float]], seeds: int) -> dict[str, dict[str, Any]]:
    """What the agreement figures mean: exhaustive against itself on the next seed (its
    own noise: the most any scorer can hope for), random roles with as many personalized
    layers as the reference (chance), and a free positional guess."""
    layers = user.exhaustive[0].layers
    rows = {}
    if seeds > 1:
        rows["exhaustive, next seed"] = _compare([user.exhaustive[(seed + 1) % seeds] for seed in range(seeds)], user, rules)
    values: dict[str, list[float]] = {}
    for rule, threshold in rules:
        references = [classify(user.exhaustive[seed], rule, threshold) for seed in range(seeds)]
        values[f"{rule} {threshold:g}"] = [agreement(random_roles(layers, len(reference.personalized()), seed), reference)
                                           for seed, reference in enumerate(references)]
    rows["random roles"] = _summary(values, [np.nan], 0)
    # Earlier layers first: a guess that costs nothing, and the order in which the role
    # rules break ties, so a scorer that leaves many ties leans on it.
    position = LayerScores(layers, -np.arange(len(layers), dtype=float), 0, "position")
    rows["earlier layers first"] = _compare([position] * seeds, user, rules)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    note = ""
    try:
        data = load_cifar10(args.data or None)
    except FedheiError as error:
        data, note = make_synthetic(), f"no CIFAR-10 here ({error}); synthetic data instead"
    scenario = Scenario(model=args.model, pretrain_epochs=args.pretrain_epochs, num_clients=args.clients,
                        dirichlet_alpha=args.alpha)
    partition = make_partition(data.train.labels, data.test.labels, scenario.partition_spec())
    base = base_model(data, scenario.pretrain_spec(), device=scenario.device, checkpoint=args.base)
    rules = [(rule, float(threshold)) for rule, threshold in (item.split(":") for item in args.rules.split(","))]
    reference = ExhaustiveScorer(signal=args.signal, prob=args.prob)

    users = []
    for client in (int(part) for part in args.client.split(",")):
        model, calibration = personalize(base, data, partition.train_indices[client], args)
        exhaustive = [reference(model, calibration, seed) for seed in range(args.seeds)]
        users.append(User(client, len(partition.train_indices[client]), model, calibration, exhaustive))
    examples = {user.client: FusionExample(layer_features(user.model, user.calibration, 0), user.exhaustive[0].scores)
                for user in users}
    for client in (int(part) for part in args.fusion_clients.split(",") if part.strip()):
        model, calibration = personalize(base, data, partition.train_indices[client], args)
        examples[client] = FusionExample.measure(model, calibration, 0, reference)
    fusion = {user.client: [example for client, example in examples.items() if client != user.client] for user in users}

    results: dict[str, dict[int, dict[str, Any]]] = {}
    for candidate in candidates(args, fusion):
        results[candidate.label] = {}
        for user in users:
            scorer = candidate.build(user.client)
            found = [scorer(user.model, user.calibration, seed) for seed in range(args.seeds)]
            results[candidate.label][user.client] = _compare(found, user, rules)
    for user in users:
        for label, row in _references(user, rules, args.seeds).items():
            results.setdefault(label, {})[user.client] = row

    exhaustive_passes = users[0].exhaustive[0].forward_passes
    print_table(results, users, rules, exhaustive_passes, args, data.source, note)
    if args.out:
        atomic.write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "note": note,
                                     "exhaustive-passes": exhaustive_passes,
                                     "users": {user.client: user.images for user in users},
                                     "fusion-clients": sorted(examples),
                                     "rows": {label: {str(client): row for client, row in per_client.items()}
                                              for label, per_client in results.items()}})
    return 0


def print_table(results: dict[str, dict[int, dict[str, Any]]], users: list[User], rules: list[tuple[str, float]],
                exhaustive_passes: int, args: argparse.Namespace, source: str, note: str) -> None:
    """One table per role rule: a row per scorer, a column per client."""
    layers = len(users[0].exhaustive[0].layers)
    for rule, threshold in rules:
        name = f"{rule} {threshold:g}"
        table = Table(title=f"role agreement with exhaustive ({name}): {args.model}, dirichlet {args.alpha:g} over "
                            f"{args.clients} clients, {layers} layers, {args.seeds} seeds")
        table.add_column("scorer", no_wrap=True)
        table.add_column("passes", justify="right")
        table.add_column("of exhaustive", justify="right")
        for user in users:
            table.add_column(f"client {user.client}", justify="right")
        table.add_column("mean", justify="right")
        table.add_column("Spearman", justify="right")
        for label, per_client in results.items():
            passes = max(row["forward-passes"] for row in per_client.values())
            rows = [per_client[user.client] for user in users]
            correlations = [row["spearman"] for row in rows]
            table.add_row(
                label, str(passes), f"{passes / exhaustive_passes:.0%}",
                *(f"{row['agreement'][name]:.3f} ({row['agreement-worst-seed'][name]:.2f})" for row in rows),
                f"{np.mean([row['agreement'][name] for row in rows]):.3f}",
                "-" if np.isnan(correlations).all() else f"{np.nanmean(correlations):.3f}",
            )
        table.caption = (f"data: {source}; clients {', '.join(f'{user.client} ({user.images} images)' for user in users)}; "
                         f"signal {args.signal}, perturbation prob {args.prob:g} unless a lever says otherwise; "
                         f"exhaustive spends {exhaustive_passes} passes; agreement: fraction of layers given the same "
                         "role as the exhaustive scorer of the same seed, mean over seeds (worst seed); Spearman: "
                         "mean over clients and seeds" + (f"; {note}" if note else ""))
        stdout.print(table)


if __name__ == "__main__":
    sys.exit(main())

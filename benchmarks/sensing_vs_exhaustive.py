"""How well does compressed sensing recover the exhaustive layer roles, and for how many passes?

For one user's model (the cached pre-trained base, fine-tuned on one client's shard),
runs the ``exhaustive`` scorer (L measurements) and the ``sensing`` scorer with m from
10% to 100% of the layer count, over a few seeds, and prints per m: role agreement
(fraction of layers with the same role under the same rule, for each rule given), the Spearman rank
correlation of the two score vectors, and the forward passes each spent.

    FEDHEI_CACHE=/tmp/fcache python benchmarks/sensing_vs_exhaustive.py --clients 20 --client 10

Uses real CIFAR-10 when this machine has it, else the synthetic set (with a note).
"""

from __future__ import annotations

import argparse
import copy
import sys
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from scipy.stats import spearmanr

from fedhei import atomic
from fedhei.data.cifar10 import load_cifar10, make_synthetic
from fedhei.data.partition import PartitionSpec, make_partition
from fedhei.errors import FedheiError
from fedhei.method.roles import RoleMap, classify, random_roles
from fedhei.method.scoring import ExhaustiveScorer, LayerScores, SensingScorer
from fedhei.method.scoring.perturbation import measurement_count
from fedhei.reporting.tables import stdout
from fedhei.training.loops import TrainSettings, batches_for, train
from fedhei.training.pretrain import PretrainSpec, base_model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="", help="base-model checkpoint; default: the cached pre-train")
    parser.add_argument("--model", default="vit-tiny-c10")
    parser.add_argument("--pretrain-epochs", type=float, default=30.0)
    parser.add_argument("--data", default="", help="CIFAR-10 source; default: search the usual places, else synthetic")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--client", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=float, default=1.0, help="personalize the base first (0: score the base)")
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--signal", default="loss")
    parser.add_argument("--prob", type=float, default=0.5, help="perturbation: random pruning ratio")
    parser.add_argument("--solver", default="lasso")
    parser.add_argument("--density", type=float, default=SensingScorer.density)
    parser.add_argument("--rules", default="top-fraction:0.25,relative:0.2",
                        help="role rules to compare under, as rule:threshold, comma separated")
    parser.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    return parser.parse_args(argv)


def _agreement(ours: RoleMap, theirs: RoleMap) -> float:
    return float(np.mean([ours.roles[name] == theirs.roles[name] for name in theirs.layers]))


def _references(exhaustive: list[LayerScores], rules: list[tuple[str, float]], seeds: int) -> list[dict[str, Any]]:
    """What the agreement figures mean: exhaustive against itself on the next seed (its
    own noise: the most sensing can hope for), random roles with as many personalized
    layers as the reference (chance), and a free positional guess."""
    layers = exhaustive[0].layers
    names = [f"{rule} {threshold:g}" for rule, threshold in rules]
    rows = []
    if seeds > 1:
        agreement = {name: [_agreement(classify(exhaustive[(seed + 1) % seeds], rule, threshold),
                                       classify(exhaustive[seed], rule, threshold)) for seed in range(seeds)]
                     for name, (rule, threshold) in zip(names, rules, strict=True)}
        correlation = [spearmanr(exhaustive[(seed + 1) % seeds].scores, exhaustive[seed].scores).statistic
                       for seed in range(seeds)]
        rows.append(("exhaustive, next seed", len(layers), agreement, correlation, exhaustive[0].forward_passes))
    agreement = {}
    for name, (rule, threshold) in zip(names, rules, strict=True):
        references = [classify(exhaustive[seed], rule, threshold) for seed in range(seeds)]
        agreement[name] = [_agreement(random_roles(layers, len(reference.personalized()), seed), reference)
                           for seed, reference in enumerate(references)]
    correlation = [spearmanr(np.random.default_rng([seed, 11]).random(len(layers)), exhaustive[seed].scores).statistic
                   for seed in range(seeds)]
    rows.append(("random roles", 0, agreement, correlation, 0))
    # Earlier layers first: a guess that costs nothing, and the order in which the role
    # rules break ties, so a scorer that leaves many exact zeros leans on it.
    position = LayerScores(layers, -np.arange(len(layers), dtype=float), 0, "position")
    agreement = {name: [_agreement(classify(position, rule, threshold), classify(exhaustive[seed], rule, threshold))
                        for seed in range(seeds)] for name, (rule, threshold) in zip(names, rules, strict=True)}
    correlation = [spearmanr(position.scores, exhaustive[seed].scores).statistic for seed in range(seeds)]
    rows.append(("earlier layers first", 0, agreement, correlation, 0))
    return [{"fraction": label, "measurements": count,
             "agreement": {name: float(np.mean(values)) for name, values in agreement.items()},
             "agreement-worst-seed": {name: float(np.min(values)) for name, values in agreement.items()},
             "spearman": float(np.mean(correlation)), "forward-passes": passes}
            for label, count, agreement, correlation, passes in rows]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    note = ""
    try:
        data = load_cifar10(args.data or None)
    except FedheiError as error:
        data, note = make_synthetic(), f"no CIFAR-10 here ({error}); synthetic data instead"
    spec = PartitionSpec(num_clients=args.clients, alpha=args.alpha)
    partition = make_partition(data.train.labels, data.test.labels, spec)
    model = base_model(data, PretrainSpec(model=args.model, epochs=args.pretrain_epochs), checkpoint=args.base)
    shard = batches_for(model, data.train, partition.train_indices[args.client])
    if args.finetune_epochs > 0:
        model = copy.deepcopy(model)
        train(model, shard, TrainSettings(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=5e-4), seed=0)
    calibration = list(islice(shard.batches(args.batch_size, shuffle=True, seed=0), args.calibration_batches))

    fractions = [float(part) for part in args.fractions.split(",")]
    rules = [(rule, float(threshold)) for rule, threshold in (item.split(":") for item in args.rules.split(","))]
    exhaustive = [ExhaustiveScorer(signal=args.signal, prob=args.prob)(model, calibration, seed) for seed in range(args.seeds)]
    layers = len(exhaustive[0].layers)
    rows = []
    for fraction in fractions:
        agreement: dict[str, list[float]] = {f"{rule} {threshold:g}": [] for rule, threshold in rules}
        correlation, passes = [], 0
        for seed in range(args.seeds):
            scorer = SensingScorer(signal=args.signal, prob=args.prob, measurements=fraction, solver=args.solver,
                                   density=args.density)
            scores = scorer(model, calibration, seed)
            for rule, threshold in rules:
                ours, theirs = classify(scores, rule, threshold), classify(exhaustive[seed], rule, threshold)
                same = [ours.roles[name] == theirs.roles[name] for name in ours.layers]
                agreement[f"{rule} {threshold:g}"].append(float(np.mean(same)))
            rho = spearmanr(scores.scores, exhaustive[seed].scores).statistic
            correlation.append(0.0 if np.isnan(rho) else float(rho))
            passes = scores.forward_passes
        rows.append({"fraction": fraction, "measurements": measurement_count(fraction, layers),
                     "agreement": {name: float(np.mean(values)) for name, values in agreement.items()},
                     "agreement-worst-seed": {name: float(np.min(values)) for name, values in agreement.items()},
                     "spearman": float(np.mean(correlation)), "forward-passes": passes})

    rows.extend(_references(exhaustive, rules, args.seeds))
    table = Table(title=f"sensing vs exhaustive: {args.model}, client {args.client} of dirichlet {args.alpha:g} "
                        f"over {args.clients} ({len(shard)} images), {layers} layers, {args.seeds} seeds")
    rule_names = list(rows[0]["agreement"]) if rows else []
    for column in ("m / L", "m", *(f"agreement ({name})" for name in rule_names), "Spearman", "sensing passes",
                   "exhaustive passes"):
        table.add_column(column, justify="right")
    for row in rows:
        label = row["fraction"] if isinstance(row["fraction"], str) else f"{row['fraction']:.0%}"
        table.add_row(label, str(row["measurements"]),
                      *(f"{row['agreement'][name]:.3f} (worst {row['agreement-worst-seed'][name]:.2f})"
                        for name in rule_names),
                      f"{row['spearman']:.3f}", str(row["forward-passes"]), str(exhaustive[0].forward_passes))
    table.caption = (f"data: {data.source}; signal {args.signal}, perturbation prob {args.prob:g}, solver {args.solver}, "
                     f"density {args.density:g}; agreement: fraction of layers given the same role by both scorers, "
                     f"mean over seeds" + (f"; {note}" if note else ""))
    stdout.print(table)
    if args.out:
        atomic.write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "note": note,
                                     "exhaustive-passes": exhaustive[0].forward_passes, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do layer roles keep more personal accuracy than uniform pruning at equal compression?

Reads benches of ``fedhei`` and ``fedhei-uniform`` run at several pruning ratios (one
bench per ``prob``, each paired on the same clients and seeds), prints a table per
ratio (each strategy's compression and mean accuracy with intervals, and FedHEI minus
FedHEI-uniform client by client), and draws both strategies' accuracy against their
compression in one figure, so that the two can be compared where their compression
is equal rather than at the same ``prob`` (HEI prunes personalized layers at half the
ratio, so it removes less at the same ``prob``).

    for p in 0.3 0.5 0.7; do fedhei bench scenarios/quickstart.toml --strategy fedhei --strategy fedhei-uniform \\
        --seeds 0,1 --set prob=$p --set 'compare-to="fedhei-uniform"' --out runs/uniform-p$p; done
    python benchmarks/roles_vs_uniform.py runs/uniform-p0.3 runs/uniform-p0.5 runs/uniform-p0.7 --figure roles.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from fedhei import atomic
from fedhei.errors import FedheiError
from fedhei.reporting.comparison import by_strategy, comparison_metric, find_runs, paired_differences, strategy_figures
from fedhei.reporting.tables import stdout

ROLES, UNIFORM = "fedhei", "fedhei-uniform"


def points(low: float, estimate: float, high: float) -> str:
    return f"{100 * estimate:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benches", type=Path, nargs="+", help="bench directories, one per prob")
    parser.add_argument("--figure", type=Path, help="where to save the accuracy-against-compression figure (PNG)")
    args = parser.parse_args(argv)
    rows, curves, probs = [], {ROLES: [], UNIFORM: []}, []
    try:
        for bench in args.benches:
            runs = find_runs([bench / ROLES, bench / UNIFORM])
            prob = float(runs[0].payload["scenario"]["prob"])
            probs.append(f"{prob:g}")
            metric = comparison_metric(runs)
            figures = {row.strategy: row for row in strategy_figures(runs, metric)}
            difference = next(row.difference for row in paired_differences(runs, metric, (UNIFORM,)) if row.strategy == ROLES)
            for name in (ROLES, UNIFORM):
                accuracy, compression = figures[name].accuracy, figures[name].compression
                assert accuracy is not None and compression is not None
                curves[name].append((compression.estimate, accuracy.estimate, accuracy.low, accuracy.high))
                rows.append(f"| {prob:g} | {name} | {100 * compression.estimate:.1f}% | "
                            f"{points(accuracy.low, accuracy.estimate, accuracy.high)} | "
                            + (f"{100 * difference.estimate:+.1f} [{100 * difference.low:+.1f}, {100 * difference.high:+.1f}], "
                               f"{difference.verdict()} |" if name == ROLES else " |"))
            seeds = sorted({run.seed for group in by_strategy(runs).values() for run in group})
    except (FedheiError, StopIteration, KeyError, IndexError) as error:
        print(f"roles_vs_uniform: error: give benches of {ROLES} and {UNIFORM} ({error})", file=sys.stderr)
        return 2
    table = ["| prob | strategy | parameters removed | mean accuracy, % [95%] | FedHEI - uniform, points [95%] |",
             "| --- | --- | --- | --- | --- |", *rows, "",
             f"Seeds {', '.join(map(str, seeds))}; accuracy: {metric}, each client's final model; paired over the same "
             "clients of the same seeds."]
    stdout.print("\n".join(table), markup=False, highlight=False)
    if args.figure:
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        for name, points_ in curves.items():
            ordered = sorted(points_)
            x = [100 * c for c, _, _, _ in ordered]
            axis.errorbar(x, [100 * a for _, a, _, _ in ordered],
                          yerr=[[100 * (a - lo) for _, a, lo, _ in ordered], [100 * (hi - a) for _, a, _, hi in ordered]],
                          marker="o", capsize=3, label="FedHEI (roles)" if name == ROLES else "uniform pruning, no roles")
        axis.set_xlabel("parameters removed (%)")
        axis.set_ylabel(f"mean client accuracy (%, {metric})")
        axis.set_title(f"accuracy against compression, prob {' / '.join(probs)}")
        axis.grid(alpha=0.3)
        axis.legend()
        atomic.write_with(args.figure, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"), suffix=".png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What quantized uploads cost in accuracy: one scenario at float32 and at a lower ``upload-precision``, same seeds.

Every run is a real simulation (``strategies.simulation.run_batch``; the runs share one
when client state is on disk). The two precisions train the same clients in the same
rounds from the same seed streams, so the comparison is paired, client by client:
the tables are fedhei's own comparison tables (``fedhei.reporting.comparison``), with
each precision in place of a strategy, float32 the reference. Runs already complete in
``--out`` are kept, so an interrupted study goes on with the same command.

    nice -n 5 python benchmarks/upload_precision.py scenarios/quickstart.toml --seeds 0,1,2 --precision int8 --out runs/int8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedhei.cli.main import scenario_arguments
from fedhei.config.precision import Precision
from fedhei.config.scenario import load_scenario
from fedhei.experiments.layout import seed_runs
from fedhei.reporting.comparison import Run, comparison_metric, comparison_tables, load_run
from fedhei.reporting.results import METRIC_NAMES
from strategies.simulation import plan_runs, run_batch


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--seeds", default="0,1,2", help="the seeds both precisions run, e.g. 0,1,2")
    parser.add_argument("--precision", default=Precision.INT8.value, choices=[p.value for p in Precision if p is not Precision.FLOAT32])
    parser.add_argument("--out", type=Path, required=True, help="where the runs go: <out>/<precision>/seed-<s>")
    return parser.parse_args(argv)


def labelled(run: Run, precision: str) -> Run:
    """The run under the name "<strategy> <precision>", so the comparison tables pair precisions as they pair strategies."""
    return Run(run.path, {**run.payload, "strategy": f"{run.strategy} {precision}"})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    precisions = (Precision.FLOAT32.value, args.precision)
    pairs = []
    for precision in precisions:
        scenario = load_scenario(args.scenario, [*args.overrides, f'upload-precision="{precision}"', f'seeds="{args.seeds}"'],
                                 args.data)
        pairs.append((precision, seed_runs(scenario, args.out / precision)))
    planned = plan_runs([pair for _, runs in pairs for pair in runs], continuing=True)
    if planned:
        run_batch(planned, quiet=True)
    runs = [labelled(load_run(run_dir), precision) for precision, runs in pairs for _, run_dir in runs]
    print(comparison_tables(runs, references=[runs[0].strategy]))
    print(per_client_table(runs, precisions))
    return 0


def per_client_table(runs: Sequence[Run], precisions: Sequence[str]) -> str:
    """Every client of every seed at both precisions, and the difference: what the paired interval rests on."""
    metric = comparison_metric(runs)
    by_key = {(run.strategy.rsplit(" ", 1)[1], run.seed): run for run in runs}
    reference, other = precisions
    lines = [f"{METRIC_NAMES[metric]}, per client:", "", f"| seed | client | {reference} | {other} | difference (points) |",
             "| --- | --- | --- | --- | --- |"]
    for seed in sorted({run.seed for run in runs}):
        if (reference, seed) not in by_key or (other, seed) not in by_key:
            continue
        theirs = {int(client["client-id"]): client[metric] for client in by_key[reference, seed].clients}
        ours = {int(client["client-id"]): client[metric] for client in by_key[other, seed].clients}
        lines += [f"| {seed} | {client} | {100 * theirs[client]:.2f}% | {100 * ours[client]:.2f}% "
                  f"| {100 * (ours[client] - theirs[client]):+.2f} |" for client in sorted(theirs.keys() & ours.keys())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

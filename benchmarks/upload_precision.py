"""What quantized uploads cost in accuracy: one scenario at float32 and at a lower ``upload-precision``, same seeds.

Every run is a real simulation (``fedhei.experiments.run.run_batch``; the runs share one
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
from fedhei.experiments.layout import seed_runs
from fedhei.experiments.run import load_scenario, plan_runs, run_batch
from fedhei.federation.wire import Precision
from fedhei.reporting.comparison import Run, comparison_tables, load_run


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
    return 0


if __name__ == "__main__":
    sys.exit(main())

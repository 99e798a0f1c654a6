"""report.md with its figures and CSV tables, for one run or a comparison of runs.

A run directory gets results.json, rounds.csv, clients.csv and report.md (its tables,
failures and final-round note, then its figures) when the server writes its results.
``fedhei report`` redraws the same from results.json, and for several runs (strategies
and/or seeds; a seed or bench directory holds several) writes a comparison: every
strategy with intervals, paired differences against the references, figures with a
line or box per strategy, and the CSV tables of all runs concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhei import atomic
from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.reporting.comparison import Run, by_strategy, comparison_tables, find_runs, run_list
from fedhei.reporting.csvs import write_run_csvs
from fedhei.reporting.figures import draw_figures, figures_markdown
from fedhei.reporting.results import RESULTS_FILE, is_text_run, render_report

REPORT_FILE = "report.md"
BENCH_FILE = "bench.md"


def write_run(run_dir: Path, payload: Mapping[str, Any]) -> None:
    """results.json, its CSV tables and its report, each written atomically."""
    atomic.write_json(run_dir / RESULTS_FILE, payload)
    write_run_csvs(run_dir, [payload])
    write_run_report(Run(run_dir, dict(payload)))


def write_run_report(run: Run) -> Path:
    drawn, notes = draw_figures([run], run.path)
    atomic.write_text(run.path / REPORT_FILE, render_report(run.payload) + "\n" + figures_markdown(drawn, notes))
    return run.path / REPORT_FILE


def references_of(runs: Sequence[Run]) -> tuple[str, ...]:
    """The runs' compare-to (one bench, one setting), or its default for files written before it existed."""
    return Scenario(compare_to=str(runs[0].payload["scenario"].get("compare-to", Scenario.compare_to))).references()


def comparison_header(runs: Sequence[Run]) -> str:
    scenario = runs[0].payload["scenario"]
    strategies = list(by_strategy(runs))
    seeds = sorted({run.seed for run in runs})
    text = is_text_run(runs[0].payload)
    return (f"# {scenario['name']}: {', '.join(strategies)}\n\n{scenario['num-clients']} clients, "
            f"{'one topic each (next-token accuracy)' if text else scenario['partition']}, "
            f"{scenario['num-server-rounds']} rounds, model {scenario['model']}, prob {scenario['prob']}, "
            f"seeds {', '.join(map(str, seeds))}; base model{'' if text else ' and public slice'}: "
            f"{'one per seed' if scenario.get('base-per-seed') else 'seed ' + str(scenario.get('base-seed', 0))}.\n\n")


def write_comparison(runs: Sequence[Run], out_dir: Path, references: Sequence[str] | None = None) -> str:
    """report.md, figures and the concatenated CSV tables of several runs in ``out_dir``; returns the tables' markdown."""
    references = tuple(references) if references is not None else references_of(runs)
    tables = comparison_header(runs) + comparison_tables(runs, references)
    drawn, notes = draw_figures(runs, out_dir)
    write_run_csvs(out_dir, [run.payload for run in runs])
    report = (tables + "\n## Runs\n\nEach run's own report holds its rounds, failures and clients.\n\n"
              + run_list(runs, out_dir) + "\n" + figures_markdown(drawn, notes))
    atomic.write_text(out_dir / REPORT_FILE, report)
    return tables


def write_bench(runs: Sequence[Run], bench_dir: Path, references: Sequence[str]) -> str:
    """A bench directory's bench.md (the tables) and report.md (the tables, the runs and the figures)."""
    tables = write_comparison(runs, bench_dir, references)
    atomic.write_text(bench_dir / BENCH_FILE, tables + f"\nFigures and every run: [{REPORT_FILE}]({REPORT_FILE}).\n")
    return tables


def report_command(paths: Sequence[Path], out: Path | None, references: Sequence[str] | None = None) -> Path:
    """``fedhei report``: one run's report, or a comparison of every run found under ``paths``."""
    runs = find_runs(paths)
    if len(runs) == 1 and out is None:
        write_run_csvs(runs[0].path, [runs[0].payload])
        return write_run_report(runs[0])
    if out is None:
        if len(paths) > 1:
            raise FedheiError("several run directories make a comparison: say where it goes with --out DIR")
        out = paths[0]
    write_comparison(runs, out, references)
    return out / REPORT_FILE

"""Evidence end to end: a bench of 3 strategies x 2 seeds (one Ray simulation), its tables, CSV and figures.

The bench runs once per module on a tiny synthetic scenario; the tests read what it wrote.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedhei.cli.main import main as fedhei_main
from fedhei.reporting.comparison import comparison_metric, find_runs, paired_differences
from strategies.simulation import bench_command

TINY = """
name = "tiny"
data-source = "synthetic"
model = "vit-micro"
num-clients = 4
fraction-train = 0.5
num-server-rounds = 2
dirichlet-alpha = 0.5
pretrain-epochs = 1.0
local-epochs = 0.25
max-local-steps = 4
finetune-steps = 4
batch-size = 32
pruning-steps = 2
calibration-batches = 1
"""
STRATEGIES, SEEDS, CLIENTS, ROUNDS = ("fedhei", "local", "fedavg"), (0, 1), 4, 2
# The pair every comparison here is about; FedAvg is in the bench for its global model, which the other two lack.
PERSONAL = ("fedhei", "local")
# Figures that draw a line, box or points per strategy, so a comparison's legend names each one.
PER_STRATEGY = ("accuracy-per-round", "final-accuracy", "layer-pruned", "compression-accuracy", "bytes-per-round")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("evidence")
    scenario = folder / "tiny.toml"
    scenario.write_text(TINY)
    out = folder / "bench"
    assert bench_command(scenario, [], list(STRATEGIES), out, seeds="0,1", quiet=True) == 0
    return out


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_bench_md_holds_intervals_and_paired_differences_with_a_verdict(bench: Path) -> None:
    text = (bench / "bench.md").read_text()
    interval = r"\d+\.\d% \[\d+\.\d, \d+\.\d\]"
    for strategy in STRATEGIES:
        assert re.search(rf"^\| {strategy} \| 2 \| {interval} \| {interval} \| {interval} \| {interval} \|", text, re.M), text
    paired = re.search(r"^\| fedhei \| local \| ([+-]\d+\.\d) \[([+-]\d+\.\d), ([+-]\d+\.\d)\] \| (better|worse|not resolved) "
                       r"\| 8 clients over 2 seeds \|$", text, re.M)
    assert paired, text
    estimate, low, high = (float(paired.group(index)) for index in (1, 2, 3))
    assert low <= estimate <= high
    expected = "better" if low > 0 else "worse" if high < 0 else "not resolved"
    assert paired.group(4) == expected
    assert "Accuracy: each client's final model on the whole test set, per class weighted" in text
    assert "No comparison against fedavg-ft" in text


def test_the_paired_difference_is_the_mean_over_seeds_of_each_clients_difference(bench: Path) -> None:
    runs = find_runs([bench])
    metric = comparison_metric(runs)
    assert metric == "accuracy-weighted"
    (pair,) = [pair for pair in paired_differences(runs, metric, ["local"]) if pair.strategy == "fedhei"]
    by_seed = []
    for seed in SEEDS:
        ours = {c["client-id"]: c[metric] for c in _results(bench / "fedhei" / f"seed-{seed}")["clients"]}
        theirs = {c["client-id"]: c[metric] for c in _results(bench / "local" / f"seed-{seed}")["clients"]}
        by_seed.append(np.mean([ours[client] - theirs[client] for client in ours]))
    assert pair.difference.estimate == pytest.approx(np.mean(by_seed))


def test_csv_has_one_row_per_client_per_round_and_one_per_final_model(bench: Path) -> None:
    with (bench / "rounds.csv").open() as handle:
        every_row = list(csv.DictReader(handle))
    rows = [row for row in every_row if row["client"]]
    global_rows = [row for row in every_row if not row["client"]]
    # The global model's rows: FedAvg's (round 0 is the base); FedHEI's and local training's are not measured.
    assert sorted((row["strategy"], int(row["seed"]), int(row["round"])) for row in global_rows) == sorted(
        itertools.product(("fedavg",), SEEDS, range(ROUNDS + 1)))
    assert all(0 <= float(row["global-accuracy"]) <= 1 for row in global_rows)
    keys = [(row["strategy"], int(row["seed"]), int(row["round"]), int(row["client"])) for row in rows]
    assert sorted(keys) == sorted(itertools.product(STRATEGIES, SEEDS, range(1, ROUNDS + 1), range(CLIENTS)))
    sampled = [row for row in rows if row["sampled"] == "1"]
    assert len(sampled) == len(STRATEGIES) * len(SEEDS) * ROUNDS * 2
    assert all(row["accuracy"] for row in rows), "every client is evaluated every round (fraction-evaluate 1)"
    with (bench / "clients.csv").open() as handle:
        finals = list(csv.DictReader(handle))
    assert len(finals) == len(STRATEGIES) * len(SEEDS) * CLIENTS
    assert all(row["accuracy"] and row["accuracy-weighted"] and row["train-airplane"] for row in finals)
    with (bench / "fedavg" / "seed-1" / "rounds.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == ROUNDS * CLIENTS + ROUNDS + 1
    with (bench / "fedhei" / "seed-1" / "rounds.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == ROUNDS * CLIENTS


def test_the_global_curve_starts_at_the_base_and_the_report_draws_it(bench: Path) -> None:
    fedavg = _results(bench / "fedavg" / "seed-0")
    curve = fedavg["global-curve"]
    assert [point["round"] for point in curve] == list(range(ROUNDS + 1))
    assert [point["global-accuracy"] for point in curve[1:]] == [record["global-eval"]["global-accuracy"]
                                                                  for record in fedavg["rounds"]]
    assert fedavg["summary"]["global-accuracy-base"] == curve[0]["global-accuracy"]
    assert fedavg["summary"]["global-accuracy-final"] == curve[-1]["global-accuracy"]
    for unmeasured in PERSONAL:
        results = _results(bench / unmeasured / "seed-0")
        assert results["global-curve"] == [] and "global-accuracy-base" not in results["summary"], unmeasured
    assert (bench / "figures" / "global-accuracy.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "figures/global-accuracy.png" in (bench / "report.md").read_text()


def test_each_seed_draws_its_partition_and_sampling_and_every_strategy_of_a_seed_shares_them(bench: Path) -> None:
    runs = {(strategy, seed): _results(bench / strategy / f"seed-{seed}") for strategy in STRATEGIES for seed in SEEDS}
    for seed in SEEDS:
        fedhei, local = runs["fedhei", seed], runs["local", seed]
        assert fedhei["scenario"]["seed"] == seed and fedhei["status"] == "complete"
        assert fedhei["partition"] == local["partition"]
        assert [r["sampled"] for r in fedhei["rounds"]] == [r["sampled"] for r in local["rounds"]]
        # One shared base model: its public slice is the base seed's, whatever the run's seed.
        assert fedhei["partition"]["public-seed"] == 0
    assert runs["fedhei", 0]["partition"]["label-counts"] != runs["fedhei", 1]["partition"]["label-counts"]


def test_the_manifest_keeps_both_accuracies_the_role_scores_and_the_pruned_fractions(bench: Path) -> None:
    manifest = json.loads((bench / "fedhei" / "seed-0" / "clients" / "2" / "manifest.json").read_text())
    assert 0 <= manifest["accuracy"] <= 1 and 0 <= manifest["accuracy-weighted"] <= 1
    assert manifest["weighted-test-examples"] > manifest["test-examples"]
    assert set(manifest["role-scores"]) == set(manifest["roles"]) == set(manifest["layer-pruned"])
    assert max(manifest["layer-pruned"].values()) == pytest.approx(0.5, abs=0.01)


def _figures(directory: Path) -> list[dict]:
    """Every figure listed in figures.json: a valid PNG of some size, linked from report.md."""
    listed = json.loads((directory / "figures" / "figures.json").read_text())
    report = (directory / "report.md").read_text()
    for figure in listed:
        path = directory / figure["file"]
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 8_000, figure["file"]
        assert f"]({figure['file']})" in report
    return listed


def test_a_single_run_report_keeps_its_tables_and_links_every_figure(bench: Path) -> None:
    run_dir = bench / "fedhei" / "seed-0"
    figures = _figures(run_dir)
    assert {Path(figure["file"]).stem for figure in figures} == {*PER_STRATEGY, "layer-roles", "label-distribution"}
    report = (run_dir / "report.md").read_text()
    assert report.startswith("# tiny: fedhei") and "## Rounds" in report and "## Clients" in report
    assert "one last local round" in report


def test_the_bench_report_carries_both_strategies_in_every_comparison_figure(bench: Path) -> None:
    figures = {Path(figure["file"]).stem: figure for figure in _figures(bench)}
    for name in PER_STRATEGY:
        assert set(PERSONAL) <= set(figures[name]["legend"]), (name, figures[name]["legend"])
    # local assigns no roles: the role map shows fedhei alone; the label distribution one panel per seed.
    assert figures["layer-roles"]["panels"] == ["fedhei, seed 0"]
    assert [panel.split(":")[0] for panel in figures["label-distribution"]["panels"]] == ["seed 0", "seed 1"]


def test_fedhei_report_compares_two_runs_given_on_the_command_line(bench: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "comparison"
    assert fedhei_main(["report", str(bench / "fedhei" / "seed-1"), str(bench / "local" / "seed-1"), "--out", str(out)]) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    figures = {Path(figure["file"]).stem: figure for figure in _figures(out)}
    for name in PER_STRATEGY:
        assert set(PERSONAL) <= set(figures[name]["legend"])
    report = (out / "report.md").read_text()
    assert re.search(r"^\| fedhei \| local \| .* \| 4 clients over 1 seed \|$", report, re.M)
    with (out / "clients.csv").open() as handle:
        assert {row["strategy"] for row in csv.DictReader(handle)} == set(PERSONAL)


def test_several_run_directories_without_out_are_refused_in_one_line(bench: Path, capsys) -> None:
    assert fedhei_main(["report", str(bench / "fedhei" / "seed-0"), str(bench / "local" / "seed-0")]) == 2
    error = capsys.readouterr().err
    assert "--out" in error and error.count("\n") == 1

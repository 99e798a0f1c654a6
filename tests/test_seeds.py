"""Seeds: one setting lists the repetitions, and a shared base model keeps its public slice for every seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedhei.config.scenario import Scenario, parse_override
from fedhei.data.cifar10 import make_synthetic
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError
from fedhei.experiments.layout import seed_runs
from strategies.checkpoint import CHECKPOINT_FILE
from strategies.simulation import plan_runs

SMALL = dict(data_source="synthetic", model="vit-micro", num_clients=5, dirichlet_alpha=0.5)


def test_seeds_repeat_the_scenario_each_as_a_single_seed_run(tmp_path: Path) -> None:
    scenario = Scenario(seeds="2,0,5", **SMALL)
    runs = seed_runs(scenario, tmp_path)
    assert [(run.seed, run.seeds, folder.name) for run, folder in runs] == [(2, "", "seed-2"), (0, "", "seed-0"), (5, "", "seed-5")]
    assert seed_runs(Scenario(seed=3, **SMALL), tmp_path) == [(Scenario(seed=3, **SMALL), tmp_path)]


def test_a_toml_list_of_seeds_is_read_as_the_same_setting(tmp_path: Path) -> None:
    file = tmp_path / "s.toml"
    file.write_text('seeds = [0, 1, 2]\ncompare-to = ["local"]\n')
    scenario = Scenario.from_toml(file)
    assert (scenario.seeds, scenario.run_seeds(), scenario.references()) == ("0,1,2", (0, 1, 2), ("local",))


def test_a_single_seed_is_one_repetition_however_it_is_written(tmp_path: Path) -> None:
    file = tmp_path / "s.toml"
    file.write_text("seeds = 4\n")
    from_cli = Scenario.from_toml(tmp_path / "s.toml", overrides=dict([parse_override("seeds=0")]))
    assert (Scenario.from_toml(file).run_seeds(), from_cli.run_seeds()) == ((4,), (0,))
    assert [folder.name for _, folder in seed_runs(from_cli, tmp_path)] == ["seed-0"]
    with pytest.raises(FedheiError, match="seeds is True"):
        Scenario.from_mapping({"seeds": True})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": "0,0"}, "seeds is '0,0'"),
        ({"seeds": "0,-1"}, "non-negative"),
        ({"seeds": "one,two"}, "seeds is 'one,two'"),
        ({"seeds": "0,1", "seed": 4}, "seed is 4 and seeds is '0,1'"),
        ({"base-per-seed": True, "base-seed": 2}, "base-seed is 2 but base-per-seed is true"),
        ({"compare-to": "local,,fedavg"}, "compare-to is 'local,,fedavg'"),
        ({"weighted-eval": "sometimes"}, "weighted-eval is 'sometimes'"),
    ],
)
def test_bad_seed_settings_are_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(FedheiError, match=message):
        Scenario.from_mapping(values)


def _splits(scenario: Scenario):
    data = make_synthetic()
    return {seed: make_partition(data.train.labels, data.test.labels, scenario.for_seed(seed).partition_spec())
            for seed in scenario.run_seeds()}


def test_a_shared_base_keeps_one_public_slice_that_no_client_of_any_seed_holds() -> None:
    scenario = Scenario(seeds="0,1,2", base_seed=7, **SMALL)
    splits = _splits(scenario)
    public = splits[0].public_indices
    for seed, split in splits.items():
        np.testing.assert_array_equal(split.public_indices, public)
        assert not np.isin(np.concatenate(split.train_indices), public).any(), seed
    assert not np.array_equal(splits[0].label_counts, splits[1].label_counts), "each seed draws its own partition"
    specs = {scenario.for_seed(seed).pretrain_spec() for seed in scenario.run_seeds()}
    assert len(specs) == 1 and specs.pop().seed == 7, "one base model (one cache entry) for every seed"


def test_a_base_per_seed_follows_each_seed_in_its_slice_and_pre_training() -> None:
    scenario = Scenario(seeds="0,1", base_per_seed=True, **SMALL)
    splits = _splits(scenario)
    assert not np.array_equal(splits[0].public_indices, splits[1].public_indices)
    for split in splits.values():
        assert not np.isin(np.concatenate(split.train_indices), split.public_indices).any()
    assert [scenario.for_seed(seed).pretrain_spec().seed for seed in (0, 1)] == [0, 1]


def test_continuing_keeps_complete_runs_resumes_checkpointed_ones_and_starts_the_rest(tmp_path: Path) -> None:
    scenario = Scenario(seeds="0,1,2", **SMALL)
    runs = seed_runs(scenario, tmp_path)
    (done, done_dir), (killed, killed_dir), (_, fresh_dir) = runs
    done_dir.mkdir()
    (done_dir / "results.json").write_text(json.dumps({"status": "complete", "scenario": done.to_mapping()}))
    killed_dir.mkdir()
    (killed_dir / CHECKPOINT_FILE).write_bytes(b"")
    planned = plan_runs(runs, continuing=True)
    assert [(run.run_dir, run.resume) for run in planned] == [(killed_dir, True), (fresh_dir, False)]
    assert [(run.run_dir, run.resume) for run in plan_runs(runs, continuing=False)] == [(d, False) for _, d in runs]
    (done_dir / "results.json").write_text(json.dumps({"status": "complete", "scenario": done.replace(prob=0.3).to_mapping()}))
    with pytest.raises(FedheiError, match="complete run with other settings"):
        plan_runs(runs, continuing=True)

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fedhei.config.reference import run_config_mismatches
from fedhei.config.scenario import Scenario, check_setting, parse_override
from fedhei.errors import FedheiError

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_run_config_is_exactly_the_scenario_defaults() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert run_config_mismatches(pyproject["tool"]["flwr"]["app"]["config"]) == []


def test_a_run_config_that_differs_from_the_defaults_is_caught() -> None:
    defaults = Scenario().to_mapping()
    changed = {**defaults, "lr": 1e-3, "unknown-key": 1}
    del changed["seed"]
    assert run_config_mismatches(changed) == ["lr", "seed", "unknown-key"]


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_parses(path: Path) -> None:
    scenario = Scenario.from_toml(path)
    assert scenario.name == path.stem


def test_overrides_parse_as_toml_values(tmp_path: Path) -> None:
    file = tmp_path / "s.toml"
    file.write_text('name = "s"\nprob = 0.3\n')
    scenario = Scenario.from_toml(file, dict(parse_override(text) for text in ["prob=0.7", "num-server-rounds=5", "scorer=magnitude"]))
    assert (scenario.prob, scenario.num_server_rounds, scenario.scorer) == (0.7, 5, "magnitude")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num-rounds": 3}, "unknown setting 'num-rounds'"),
        ({"prob": "high"}, "prob is 'high'"),
        ({"prob": 1.5}, "prob is 1.5"),
        ({"partition": "random"}, "partition is 'random'"),
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha"),
        ({"model": "resnet18"}, "unknown model"),
        ({"num-clients": 0}, "num-clients"),
        ({"server-tau": 0.0}, "server-tau is 0.0; it must be > 0"),
        ({"server-beta2": 1.0}, "server-beta2 is 1.0; it must be in [0, 1)"),
        ({"momentum": 1.0}, "momentum is 1.0"),
        ({"lr-decay": 0.0}, "lr-decay is 0.0; it must be in (0, 1]"),
        ({"client-optimizer": "lion"}, "client-optimizer is 'lion'; choose one of: sgd, adamw"),
        ({"text-topics": 0}, "text-topics is 0"),
        ({"distill-temperature": 0.0}, "distill-temperature is 0.0"),
    ],
)
def test_bad_settings_are_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(FedheiError, match=re.escape(message)):
        Scenario.from_mapping(values)


def test_a_scenario_with_tables_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "nested.toml"
    file.write_text("[tool]\nx = 1\n")
    with pytest.raises(FedheiError, match="flat"):
        Scenario.from_toml(file)


def test_one_value_is_checked_against_its_declaration() -> None:
    check_setting("prob", 0.0)
    with pytest.raises(FedheiError, match=r"prob is 1\.0; it must be in \[0, 1\)"):
        check_setting("prob", 1.0)

"""One definition of every setting: change one default on the scenario, and everything derived from it follows.

A copy of the package differs from this one in a single token, public-fraction's default
on :class:`Scenario`; a fresh process imports the copy and reads every consumer of
that setting: the scenario, the components it builds, the check that keeps
``[tool.flwr.app.config]`` equal to the defaults, the flags of ``fedhei data``,
``pretrain`` and ``compress``, and the reference page. Any of them keeping a default
of its own would still say 0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from fedhei.cli.main import build_parser
from fedhei.config.reference import reference_markdown, run_config_mismatches
from fedhei.config.scenario import Scenario

REPO = Path(__file__).resolve().parents[1]
DECLARATION = "public_fraction: float = setting({value}, "
COMMANDS = ("data", "pretrain", "compress")

# Run in the process that imports the edited copy (argv: pyproject.toml, then the commands); prints what each
# consumer of public-fraction says.
PROBE = """
import json, sys, tomllib
import fedhei
from fedhei.cli.main import build_parser
from fedhei.config.reference import reference_markdown, run_config_mismatches
from fedhei.config.scenario import Scenario

pyproject = tomllib.loads(open(sys.argv[1]).read())["tool"]["flwr"]["app"]["config"]
scenario = Scenario()
print(json.dumps({
    "package": fedhei.__file__,
    "scenario": scenario.public_fraction,
    "components": [scenario.partition_spec().public_fraction, scenario.pretrain_spec().public_fraction],
    "pyproject-mismatches": run_config_mismatches(pyproject),
    "flags": {command: build_parser().parse_args([command]).public_fraction for command in sys.argv[2:]},
    "reference": next(row for row in reference_markdown().splitlines() if row.startswith("| `public-fraction` |")),
}))
"""


def _pyproject_config() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]


def _probe_copy_with_default(tmp_path: Path, value: str) -> dict[str, Any]:
    """What every consumer says when the package's one declaration of public-fraction defaults to ``value``."""
    copy = tmp_path / "fedhei"
    shutil.copytree(REPO / "fedhei", copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "config" / "scenario.py"
    text = source.read_text()
    assert text.count(DECLARATION.format(value="0.1")) == 1, "the declaration moved; update DECLARATION"
    source.write_text(text.replace(DECLARATION.format(value="0.1"), DECLARATION.format(value=value)))
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "pyproject.toml"), *COMMANDS], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_one_default_changed_on_the_scenario_changes_every_consumer(tmp_path: Path) -> None:
    # As shipped, every consumer says 0.1 and pyproject.toml agrees.
    parser = build_parser()
    assert Scenario().public_fraction == 0.1
    assert {command: parser.parse_args([command]).public_fraction for command in COMMANDS} == dict.fromkeys(COMMANDS, 0.1)
    assert run_config_mismatches(_pyproject_config()) == []
    assert "| `public-fraction` | float | `0.1` |" in reference_markdown()

    probed = _probe_copy_with_default(tmp_path, "0.2")
    assert Path(probed["package"]).is_relative_to(tmp_path), "the probe must import the edited copy"
    assert probed["scenario"] == 0.2
    assert probed["components"] == [0.2, 0.2]
    assert probed["pyproject-mismatches"] == ["public-fraction"], "pyproject.toml's check must notice the new default"
    assert probed["flags"] == dict.fromkeys(COMMANDS, 0.2)
    assert probed["reference"].startswith("| `public-fraction` | float | `0.2` |")

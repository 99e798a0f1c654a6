"""The configuration reference lists every scenario setting with its default and help."""

from __future__ import annotations

from dataclasses import fields

from fedhei.config.reference import markdown_text, reference_markdown, toml_literal
from fedhei.config.scenario import Scenario
from fedhei.config.settings import bounds, choices, help_text


def _rows() -> dict[str, str]:
    rows = [line for line in reference_markdown().splitlines() if line.startswith("| `")]
    return {row.split("`")[1]: row for row in rows}


def test_every_setting_has_help() -> None:
    missing = [entry.name for entry in fields(Scenario) if not help_text(entry).strip()]
    assert not missing, f"settings without help: {missing}"


def test_every_setting_is_listed_with_its_default_help_and_choices() -> None:
    rows = _rows()
    assert len(rows) == len(fields(Scenario))
    for entry in fields(Scenario):
        key = entry.name.replace("_", "-")
        row = rows[key]
        assert f"`{toml_literal(entry.default)}`" in row, key
        assert markdown_text(help_text(entry)) in row, key
        for value in choices(entry):
            assert f"`{value}`" in row, (key, value)
        if bounds(entry) is not None:
            assert markdown_text(f"Must be {bounds(entry)}.") in row, key


def test_defaults_are_written_as_a_scenario_file_writes_them() -> None:
    rows = _rows()
    assert '`"fedhei"`' in rows["strategy"]
    assert "`0.0005`" in rows["lr"]
    assert "`true`" in rows["babu-finetune-body"]
    assert "`dirichlet`" in rows["partition"] and "`pathological`" in rows["partition"]
    assert "Must be in [0, 1)." in rows["prob"] and "Must be &gt;= 1." in rows["num-clients"]
    assert "`sensing`" in rows["scorer"] and "fused-linear" not in rows["scorer"]

"""The configuration reference, written from the scenario's own fields.

Each setting's key, type, default, choices or range and help are declared once, on
:class:`~fedhei.config.scenario.Scenario`; the documentation site renders this
page at build time, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import Field, fields
from typing import Any

from fedhei.config.scenario import Scenario, _key
from fedhei.config.settings import bounds, choices, help_text

_INTRO = """\
# Configuration reference

Every setting of a run, as its run-config key. A scenario file is a flat TOML of
these keys; `--set key=value` overrides one on the command line, and
`flwr run . --run-config FILE` reads the same keys. A key left out takes the
default below, which is also what `[tool.flwr.app.config]` in `pyproject.toml`
lists, and what the flags of `fedhei data`, `fedhei pretrain` and `fedhei compress`
(`--key`) default to. Every value is checked when the scenario is read: a bad one
stops the run in one line before anything starts.

This page is generated from the scenario's definition
(`fedhei.config.scenario.Scenario`) when the site is built.

| key | type | default | what it does |
| --- | --- | --- | --- |
"""


def toml_literal(value: Any) -> str:
    """A default as it is written in a scenario file: ``"fedhei"``, ``true``, ``0.0005``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _row(entry: Field[Any]) -> str:
    key = _key(entry.name)
    kind = entry.type if isinstance(entry.type, str) else entry.type.__name__
    text = help_text(entry)
    allowed = choices(entry)
    if allowed:
        text += " One of: " + ", ".join(f"`{value}`" for value in allowed) + "."
    interval = bounds(entry)
    if interval is not None:
        text += f" Must be {interval}."
    return f"| `{key}` | {kind} | `{toml_literal(entry.default)}` | {markdown_text(text)} |"


def markdown_text(text: str) -> str:
    """Help is plain text (the CLI shows it too): keep <name>, a * and a | literal in a table cell."""
    for char, escape in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*")):
        text = text.replace(char, escape)
    return text


def reference_markdown() -> str:
    """The configuration reference page: one row per scenario field, in declaration order."""
    return _INTRO + "\n".join(_row(entry) for entry in fields(Scenario)) + "\n"


def run_config_mismatches(config: Mapping[str, Any]) -> list[str]:
    """The keys where a Flower app's run config (``[tool.flwr.app.config]``) differs from the scenario's
    defaults, missing or extra included; a test keeps ``pyproject.toml``'s at none."""
    defaults = Scenario().to_mapping()
    return sorted(key for key in defaults.keys() | config.keys()
                  if key not in config or key not in defaults or config[key] != defaults[key])

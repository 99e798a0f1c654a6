"""The configuration reference, written from the scenario's own fields.

Each setting's key, type, default, choices and help are declared once, on
:class:`~fedhei.config.scenario.Scenario`; the documentation site renders this
page at build time, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
from dataclasses import Field, fields
from typing import Any

from fedhei.config.scenario import _CHOICES, Scenario, _key
from fedhei.method.scoring import FEDERATED_SCORERS

# Choices read from a registry rather than from the scenario's own table.
_REGISTRY_CHOICES: dict[str, tuple[str, ...]] = {"scorer": FEDERATED_SCORERS}

_INTRO = """\
# Configuration reference

Every setting of a run, as its run-config key. A scenario file is a flat TOML of
these keys; `--set key=value` overrides one on the command line, and
`flwr run . --run-config FILE` reads the same keys. A key left out takes the
default below, which is also what `[tool.flwr.app.config]` in `pyproject.toml`
lists. Every value is checked when the scenario is read: a bad one stops the run
in one line before anything starts.

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


def choices(key: str) -> tuple[str, ...]:
    """The values a key accepts, where it accepts only a few."""
    return _CHOICES.get(key) or _REGISTRY_CHOICES.get(key, ())


def help_text(entry: Field[Any]) -> str:
    """A field's one line of help (empty when it has none, which a test forbids)."""
    return str(entry.metadata.get("help", ""))


def _row(entry: Field[Any]) -> str:
    key = _key(entry.name)
    kind = entry.type if isinstance(entry.type, str) else entry.type.__name__
    text = help_text(entry)
    allowed = choices(key)
    if allowed:
        text += " One of: " + ", ".join(f"`{value}`" for value in allowed) + "."
    return f"| `{key}` | {kind} | `{toml_literal(entry.default)}` | {markdown_text(text)} |"


def markdown_text(text: str) -> str:
    """Help is plain text (the CLI shows it too): keep <name>, a * and a | literal in a table cell."""
    for char, escape in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("*", "\\*")):
        text = text.replace(char, escape)
    return text


def reference_markdown() -> str:
    """The configuration reference page: one row per scenario field, in declaration order."""
    return _INTRO + "\n".join(_row(entry) for entry in fields(Scenario)) + "\n"

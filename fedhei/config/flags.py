"""Command-line flags for scenario settings, generated from the scenario's fields.

``fedhei data``, ``pretrain`` and ``compress`` take some scenario settings as flags
named after their keys (``--num-clients``). A flag's type, default, choices, range and
help are its field's, and the flags are read back through
:meth:`Scenario.from_mapping`, so a flag is checked exactly as the same key in a
scenario file is and no command keeps a default of its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import Field, fields
from typing import Any

from fedhei.config.scenario import Scenario, _key
from fedhei.config.settings import bounds, choices, help_text

# data-source keeps the flag that ``fedhei run`` and ``bench`` also give it.
_ALIASES: dict[str, tuple[str, ...]] = {"data-source": ("--data",)}


def _fields() -> dict[str, Field[Any]]:
    return {_key(entry.name): entry for entry in fields(Scenario)}


def _help(entry: Field[Any]) -> str:
    text = help_text(entry).replace("%", "%%")
    interval = bounds(entry)
    if interval is not None:
        text += f" Must be {interval}."
    return text + " Default: %(default)r."


def add_scenario_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, keys: Sequence[str]) -> None:
    """One ``--key`` option per scenario key, with the field's type, default, choices and help."""
    known = _fields()
    for key in keys:
        entry = known[key]
        option = (f"--{key}", *_ALIASES.get(key, ()))
        if isinstance(entry.default, bool):
            parser.add_argument(*option, dest=entry.name, action=argparse.BooleanOptionalAction, default=entry.default,
                                help=_help(entry))
            continue
        allowed = choices(entry)
        # The choices are shown here and checked by the scenario, so a bad one is its one-line error.
        parser.add_argument(*option, dest=entry.name, type=type(entry.default), default=entry.default,
                            metavar="{" + ",".join(allowed) + "}" if allowed else None, help=_help(entry))


def scenario_from_flags(args: argparse.Namespace, keys: Sequence[str], fixed: Mapping[str, Any] | None = None) -> Scenario:
    """The scenario the flags of ``keys`` give (and ``fixed``, by key), the rest at their defaults."""
    known = _fields()
    return Scenario.from_mapping({**{key: getattr(args, known[key].name) for key in keys}, **(fixed or {})})

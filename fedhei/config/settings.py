"""How a scenario setting is declared, and the one check every declared setting gets.

A setting's default, help, choices and range live in its dataclass field, so the
scenario's checks, the configuration reference and the command-line flags all read
the same declaration and cannot disagree.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field
from typing import Any

from fedhei.errors import FedheiError


@dataclass(frozen=True)
class Bounds:
    """A closed or open interval a number must lie in; None leaves that side open-ended."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def contains(self, value: float) -> bool:
        return ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
                and (self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below))

    def __str__(self) -> str:
        low = f"[{self.at_least:g}" if self.at_least is not None else (f"({self.above:g}" if self.above is not None else "")
        high = f"{self.at_most:g}]" if self.at_most is not None else (f"{self.below:g})" if self.below is not None else "")
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        return ("<= " if high[-1] == "]" else "< ") + high[:-1]


def setting(default: Any, help: str, *, choices: tuple[str, ...] = (), at_least: float | None = None,
            above: float | None = None, at_most: float | None = None, below: float | None = None) -> Any:
    """A scenario field: its default, one line of help, and the values it accepts (a few choices or a range)."""
    metadata: dict[str, Any] = {"help": help, "choices": choices}
    if (at_least, above, at_most, below) != (None, None, None, None):
        metadata["bounds"] = Bounds(at_least, above, at_most, below)
    return field(default=default, metadata=metadata)


def help_text(entry: Field[Any]) -> str:
    """A field's one line of help (empty when it has none, which a test forbids)."""
    return str(entry.metadata.get("help", ""))


def choices(entry: Field[Any]) -> tuple[str, ...]:
    """The values a field accepts, where it accepts only a few."""
    return tuple(entry.metadata.get("choices", ()))


def bounds(entry: Field[Any]) -> Bounds | None:
    """The range a numeric field must lie in, where it has one."""
    return entry.metadata.get("bounds")


def check_value(key: str, entry: Field[Any], value: Any) -> None:
    """The one check of a declared setting: its choices or its range."""
    allowed = choices(entry)
    if allowed and value not in allowed:
        raise FedheiError(f"{key} is '{value}'; choose one of: {', '.join(allowed)}")
    interval = bounds(entry)
    if interval is not None and not interval.contains(value):
        raise FedheiError(f"{key} is {value}; it must be {interval}")

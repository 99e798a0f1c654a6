"""Injected client faults, drawn per client-round from a named seed stream.

A robustness study (and the tests) needs clients that really fail inside a running
federation, not only in unit tests. Faults strike training rounds only: a crash
raises inside the ClientApp before the client's state changes; a drop leaves the
round at once, as a node that goes offline does; a hang is a straggler that
finishes its work (its state advances) but answers only after the round's deadline.
"""

from __future__ import annotations

from enum import StrEnum

from fedhei import seeding
from fedhei.config.scenario import Scenario

# A hung client answers this long after the round's deadline, so the server has
# moved on by then; short, so the worker it blocks comes back soon after.
HANG_GRACE_S = 1.0


class Fault(StrEnum):
    NONE = "none"
    CRASH = "crash"
    HANG = "hang"
    DROP = "drop"


class InjectedCrash(RuntimeError):
    """The exception a client raises when ``fault-crash`` strikes it."""


def fault_for(scenario: Scenario, server_round: int, client_id: int) -> Fault:
    """The fault (if any) that strikes this client in this training round.

    One uniform draw per client-round, cut into consecutive intervals of the three
    fractions, so the same seed strikes the same client-rounds in every run.
    """
    draw = seeding.rng(scenario.seed, "fault", server_round, client_id).random()
    for fault, fraction in ((Fault.CRASH, scenario.fault_crash), (Fault.HANG, scenario.fault_hang), (Fault.DROP, scenario.fault_drop)):
        if draw < fraction:
            return fault
        draw -= fraction
    return Fault.NONE


def hang_seconds(scenario: Scenario, sent_at: float, now: float) -> float:
    """How long a hung client sleeps before answering: until just past the round's deadline.

    The deadline runs from when the server sent the message (``sent_at``), not from
    when this client got to it: in a simulation a hung client holds one of the
    engine's few workers, and should hold it no longer than the hang needs.
    """
    return max(HANG_GRACE_S, sent_at + scenario.round_timeout + HANG_GRACE_S - now)

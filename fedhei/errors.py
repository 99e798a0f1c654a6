"""The exceptions that reach a user as a single line."""

from __future__ import annotations


class FedheiError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do.

    The command-line entry prints it as one line and exits 2, without a traceback,
    so every check in the core raises this instead of a bare ValueError.
    """


class RunFailed(FedheiError):
    """A run that started but could not finish as a success: too many clients failed in a
    round, no update was ever aggregated, or a client's final model is missing.

    The completed rounds are kept (results.json, status "partial"); the command line
    prints the message as one line and exits 3.
    """

    def __init__(self, message: str, stopped_round: int | None = None) -> None:
        super().__init__(message)
        self.stopped_round = stopped_round

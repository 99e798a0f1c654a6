"""The one exception type that reaches a user as a single line."""


class FedheiError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do.

    The command-line entry prints it as one line and exits non-zero, without a
    traceback, so every check in the core raises this instead of a bare ValueError.
    """

"""The ``fedhei`` command line."""

from fedhei.cli.main import main

__all__ = ["main"]

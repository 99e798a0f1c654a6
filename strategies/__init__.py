"""Server-side strategies, one per module, and the lookup a scenario's ``strategy`` key goes through.

A scenario names a built-in strategy (``fedhei``, ``fedavg``, ...) or a user's own
class by import path (``package.module:Class``), which must subclass
:class:`PersonalizedStrategy`.
"""

from __future__ import annotations

import importlib

from fedhei.errors import FedheiError
from strategies.base import PersonalizedStrategy
from strategies.ditto import Ditto
from strategies.fedala import FedALA
from strategies.fedavg import FedAvgBaseline
from strategies.fedavg_ft import FedAvgFineTune
from strategies.fedbabu import FedBABU
from strategies.fedhei import FedHEI
from strategies.fedhei_uniform import FedHEIUniform
from strategies.fedper import FedPer
from strategies.fedrep import FedRep
from strategies.lg_fedavg import LGFedAvg
from strategies.local import LocalOnly

STRATEGIES: dict[str, type[PersonalizedStrategy]] = {
    cls.name: cls
    for cls in (FedHEI, FedHEIUniform, FedAvgBaseline, FedAvgFineTune, FedPer, FedRep, LGFedAvg, LocalOnly, Ditto, FedALA,
                FedBABU)
}


def resolve_strategy(name: str) -> type[PersonalizedStrategy]:
    """A built-in name, or ``package.module:Class`` for a user's own strategy."""
    if name in STRATEGIES:
        return STRATEGIES[name]
    module_name, sep, class_name = name.partition(":")
    if not sep:
        raise FedheiError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)} or give package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FedheiError(f"cannot import strategy '{name}': {error}") from error
    except Exception as error:
        # The user's own module failed while it ran (a syntax error, an exception at import): name it and the error.
        raise FedheiError(f"cannot import strategy '{name}': module '{module_name}' raised "
                          f"{type(error).__name__}: {error}") from error
    found = getattr(module, class_name, None)
    if found is None:
        raise FedheiError(f"cannot import strategy '{name}': module '{module_name}' has no '{class_name}'")
    if not (isinstance(found, type) and issubclass(found, PersonalizedStrategy)):
        raise FedheiError(f"strategy '{name}' is not a subclass of strategies.base.PersonalizedStrategy")
    return found


__all__ = [
    "STRATEGIES",
    "Ditto",
    "FedALA",
    "FedAvgBaseline",
    "FedAvgFineTune",
    "FedBABU",
    "FedHEI",
    "FedHEIUniform",
    "FedPer",
    "FedRep",
    "LGFedAvg",
    "LocalOnly",
    "PersonalizedStrategy",
    "resolve_strategy",
]

"""Client-side algorithms: how a client trains in a round and which model it keeps, by name.

A strategy's :class:`~fedhei.federation.policy.ClientPolicy` names one; the client
round calls it through :class:`ClientAlgorithm`'s three methods, whatever it is.
"""

from __future__ import annotations

from fedhei.errors import FedheiError
from fedhei.federation.algorithms.base import ClientAlgorithm, LocalTraining, Trained
from fedhei.federation.algorithms.ditto import DittoTraining
from fedhei.federation.algorithms.fedala import FedALATraining
from fedhei.federation.algorithms.fedbabu import FedBABUTraining
from fedhei.federation.algorithms.fedrep import FedRepTraining

ALGORITHMS: dict[str, ClientAlgorithm] = {
    algorithm.name: algorithm for algorithm in (ClientAlgorithm(), FedRepTraining(), DittoTraining(), FedALATraining(), FedBABUTraining())
}


def algorithm_for(name: str) -> ClientAlgorithm:
    if name not in ALGORITHMS:
        raise FedheiError(f"client algorithm '{name}' is unknown; choose one of: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


__all__ = ["ALGORITHMS", "ClientAlgorithm", "LocalTraining", "Trained", "algorithm_for"]

"""FedALA (Zhang et al. 2023): FedAvg, with each client blending the global model into its local one by learned weights."""

from __future__ import annotations

from fedhei.federation.algorithms.fedala import FedALATraining
from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedALA(PersonalizedStrategy):
    name = "fedala"
    policy = ClientPolicy(sharing=Sharing.ALL, algorithm=FedALATraining.name)

"""FedAvg (McMahan et al. 2017): one global model; each user evaluates it as it is."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedAvgBaseline(PersonalizedStrategy):
    name = "fedavg"
    policy = ClientPolicy(sharing=Sharing.ALL)

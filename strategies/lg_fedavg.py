"""LG-FedAvg (Liang et al. 2020): local representations, a global head."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class LGFedAvg(PersonalizedStrategy):
    name = "lg-fedavg"
    policy = ClientPolicy(sharing=Sharing.HEAD)

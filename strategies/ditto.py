"""Ditto (Li et al. 2021): FedAvg for the global model, and a personal model per user pulled toward it by ``ditto-lambda``."""

from __future__ import annotations

from fedhei.federation.algorithms.ditto import DittoTraining
from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class Ditto(PersonalizedStrategy):
    name = "ditto"
    policy = ClientPolicy(sharing=Sharing.ALL, algorithm=DittoTraining.name)

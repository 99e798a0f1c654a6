"""FedAvg with local fine-tuning: each user adapts the final global model to its own data."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedAvgFineTune(PersonalizedStrategy):
    name = "fedavg-ft"
    policy = ClientPolicy(sharing=Sharing.ALL, finetune_before_eval=True)

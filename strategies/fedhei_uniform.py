"""FedHEI without roles: every linear layer generic, shared and pruned at ``prob`` (the pruning baseline)."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from strategies.base import PersonalizedStrategy


class FedHEIUniform(PersonalizedStrategy):
    name = "fedhei-uniform"
    policy = ClientPolicy(sharing=Sharing.GENERIC, pruning=Pruning.UNIFORM)

"""FedHEI: share only the generic layers; prune generic at ``prob``, personalized at ``prob * personal-factor``."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from strategies.base import PersonalizedStrategy


class FedHEI(PersonalizedStrategy):
    name = "fedhei"
    policy = ClientPolicy(sharing=Sharing.GENERIC, pruning=Pruning.ROLES)

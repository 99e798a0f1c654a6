"""Local training only: nothing is shared; the floor every federated method should beat."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class LocalOnly(PersonalizedStrategy):
    name = "local"
    policy = ClientPolicy(sharing=Sharing.NONE)

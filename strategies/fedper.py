"""FedPer (Arivazhagan et al. 2019): shared body, a personal classifier head per user."""

from __future__ import annotations

from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedPer(PersonalizedStrategy):
    name = "fedper"
    policy = ClientPolicy(sharing=Sharing.BODY)

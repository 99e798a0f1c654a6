"""FedRep (Collins et al. 2021): train the personal head first with the body frozen, then the shared body."""

from __future__ import annotations

from fedhei.federation.algorithms.fedrep import FedRepTraining
from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedRep(PersonalizedStrategy):
    name = "fedrep"
    policy = ClientPolicy(sharing=Sharing.BODY, algorithm=FedRepTraining.name, head_epochs=1.0)

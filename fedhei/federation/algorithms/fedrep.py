"""FedRep (Collins et al. 2021): the personal head trains first with the body frozen, then the body with the head frozen."""

from __future__ import annotations

from dataclasses import replace

from fedhei import seeding
from fedhei.federation.algorithms.base import ClientAlgorithm, LocalTraining, Trained
from fedhei.federation.policy import FEDREP
from fedhei.training.loops import train


class FedRepTraining(ClientAlgorithm):
    name = FEDREP

    def train(self, work: LocalTraining) -> Trained:
        settings = work.scenario.train_settings()
        head = work.head_names()
        train(work.model, work.data, replace(settings, epochs=work.policy.head_epochs), work.masks,
              seed=seeding.seed_for(work.seed, "head-epochs"), trainable=head, objective=work.final_objective())
        return Trained(train(work.model, work.data, settings, work.masks, seed=work.seed,
                             trainable=work.parameter_names() - head, objective=work.final_objective()))

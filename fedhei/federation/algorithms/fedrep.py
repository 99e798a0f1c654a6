"""FedRep (Collins et al. 2021): the personal head trains first with the body frozen, then the body with the head frozen.

Both phases share one step budget per round (the call's ``settings``), split in
proportion to the policy's head epochs and the round's epochs, so FedRep trains as
many steps as every other strategy and is compared on equal work.
"""

from __future__ import annotations

import math
from dataclasses import replace

from fedhei import seeding
from fedhei.federation.algorithms.base import ClientAlgorithm, LocalTraining, Trained
from fedhei.training.loops import TrainSettings, train

FEDREP = "fedrep"


def phase_steps(settings: TrainSettings, head_epochs: float, examples: int) -> tuple[int, int]:
    """(head steps, body steps): the call's step budget split by head epochs against the call's epochs,
    each phase at least one step when the budget allows two."""
    budget = settings.total_steps(examples)
    if budget < 2 or head_epochs == 0:
        return (0, budget) if head_epochs == 0 else (budget, 0)
    head = round(budget * head_epochs / (head_epochs + settings.epochs))
    head = min(max(head, 1), budget - 1)
    return head, budget - head


class FedRepTraining(ClientAlgorithm):
    name = FEDREP

    def train(self, work: LocalTraining) -> Trained:
        head_steps, body_steps = phase_steps(work.settings, work.head_epochs, len(work.data))
        head = work.head_names()
        # Each phase's epochs cover its share of the steps; the cap makes the share exact.
        for_steps = math.ceil(len(work.data) / work.settings.batch_size)
        head_metrics = {}
        if head_steps:
            head_metrics = train(work.model, work.data, replace(work.settings, epochs=head_steps / for_steps, max_steps=head_steps),
                                 work.masks, seed=seeding.seed_for(work.seed, "head-epochs"), trainable=head,
                                 objective=work.final_objective())
        if not body_steps:
            return Trained(head_metrics)
        return Trained(train(work.model, work.data, replace(work.settings, epochs=body_steps / for_steps, max_steps=body_steps),
                             work.masks, seed=work.seed, trainable=work.parameter_names() - head, objective=work.final_objective()))

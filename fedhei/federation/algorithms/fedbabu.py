"""FedBABU (Oh et al. 2022): the head stays at its random initialization while the body federates.

During the rounds only the body trains and is shared; the head is a personal
parameter that never moves, so every client and the server hold the same random
head until the end. In the final local round each client fine-tunes the head, and
the body too unless ``babu-finetune-body`` is false, before its model is evaluated
and exported. The server draws the head (:func:`initial_head`) from the run's seed.
"""

from __future__ import annotations

import numpy as np

from fedhei import seeding
from fedhei.federation.algorithms.base import ClientAlgorithm, LocalTraining, Trained
from fedhei.models.adapters import adapter_for
from fedhei.models.registry import create_model
from fedhei.training.loops import train


def initial_head(model_name: str, seed: int) -> dict[str, np.ndarray]:
    """The model's own initialization of its head, drawn from the (seed, "fedbabu-head") stream."""
    model = create_model(model_name, seed=seeding.seed_for(seed, "fedbabu-head"))
    head = set(adapter_for(model).head_parameters(model))
    return {name: value.detach().numpy().copy() for name, value in model.named_parameters() if name in head}


class FedBABUTraining(ClientAlgorithm):
    name = "fedbabu"

    def train(self, work: LocalTraining) -> Trained:
        return Trained(train(work.model, work.data, work.settings, work.masks, seed=work.seed,
                             trainable=work.parameter_names() - work.head_names()))

    def finetune(self, work: LocalTraining) -> Trained:
        trainable = None if work.scenario.babu_finetune_body else work.head_names()
        return Trained(train(work.model, work.data, work.settings, work.masks, seed=work.seed,
                             trainable=trainable, objective=work.final_objective()))

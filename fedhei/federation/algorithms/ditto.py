"""Ditto (Li et al. 2021): a personal model beside FedAvg's global one.

Each round the client trains its copy of the global model w it received, as FedAvg
does, and sends that; it also trains its personal model v on the same data with a
proximal term ``ditto-lambda / 2 * ||v - w||^2`` toward the received w. v never
leaves the client: it lives in the client's state, and it is the model the user
evaluates and exports. v starts as the global model the client first receives.
Both train with the scenario's client optimizer for the round's budget, each with
the whole budget (Ditto's two models are two trainings by design, as in its paper).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.federation.algorithms.base import (
    ClientAlgorithm,
    LocalTraining,
    Trained,
    load_parameters,
    saved,
    snapshot,
    to_cpu,
)
from fedhei.federation.state import ClientState
from fedhei.training.loops import train

PERSONAL = "ditto-personal/"


def proximal_term(anchor: dict[str, torch.Tensor], strength: float) -> Callable[[nn.Module], torch.Tensor]:
    """``strength / 2 * ||params - anchor||^2`` over the anchored parameters."""

    def penalty(model: nn.Module) -> torch.Tensor:
        squares = [(value - anchor[name]).pow(2).sum() for name, value in model.named_parameters() if name in anchor]
        return 0.5 * strength * torch.stack(squares).sum()

    return penalty


class DittoTraining(ClientAlgorithm):
    name = "ditto"

    def train(self, work: LocalTraining) -> Trained:
        settings = work.settings
        received = snapshot(work.model)
        personal = self._personal(work.model, work.saved(PERSONAL))
        strength = work.scenario.ditto_lambda
        train(personal, work.data, settings, work.masks, seed=seeding.seed_for(work.seed, "ditto-personal"),
              regularizer=proximal_term(received, strength) if strength > 0 else None)
        metrics = train(work.model, work.data, settings, work.masks, seed=work.seed)
        return Trained(metrics, kept=personal, tensors=to_cpu(snapshot(personal), PERSONAL))

    def kept_model(self, model: nn.Module, scenario: Scenario, state: ClientState | None) -> nn.Module:
        return self._personal(model, saved(state, PERSONAL))

    @staticmethod
    def _personal(model: nn.Module, saved: dict[str, torch.Tensor]) -> nn.Module:
        """v: the client's saved personal model, or (the first time) a copy of the global model."""
        personal = copy.deepcopy(model)
        load_parameters(personal, saved)
        return personal

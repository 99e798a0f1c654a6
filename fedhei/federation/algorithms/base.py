"""The one interface every client-side algorithm answers, and plain local training (FedAvg's).

The client round merges the global model with the client's state, takes its pruning
step, then hands the model to the algorithm its policy names; what the client sends
is read from that model afterwards. An algorithm may keep a different model for the
user (Ditto's personal model) and tensors of its own for the next round; both go
through :class:`Trained`, so they land in the client's state and survive a resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from fedhei.config.scenario import Scenario
from fedhei.federation.state import ClientState
from fedhei.models.adapters import adapter_for
from fedhei.models.tasks import Batches
from fedhei.training.distill import objective
from fedhei.training.loops import Objective, TrainSettings, train

# The name of plain local training, the algorithm a policy names when it names none.
PLAIN = "plain"


@dataclass(frozen=True)
class LocalTraining:
    """One client's local training in one round."""

    scenario: Scenario
    # The policy's head epochs: FedRep trains the head alone for these before the body.
    head_epochs: float
    # This client's seed in this round (fedhei.seeding); sub-streams derive from it.
    seed: int
    # This call's budget and optimizer: the round's (Scenario.train_settings) or the final round's (finetune_settings).
    settings: TrainSettings
    # The global model with this client's personal parameters and masks: trained in place,
    # and what the client sends is read from it afterwards.
    model: nn.Module
    data: Batches
    masks: Mapping[str, torch.Tensor]
    # What this client kept from its last round; None the first time.
    state: ClientState | None
    # With ``distill``, the final round's model before its last pruning step: the teacher the
    # pruned model fine-tunes against.
    teacher: nn.Module | None = None

    def parameter_names(self) -> set[str]:
        return {name for name, _ in self.model.named_parameters()}

    def head_names(self) -> set[str]:
        return set(adapter_for(self.model).head_parameters(self.model))

    def saved(self, prefix: str) -> dict[str, torch.Tensor]:
        return saved(self.state, prefix)

    def final_objective(self) -> Objective | None:
        """Distillation from the teacher when there is one; else the task's own loss."""
        if self.teacher is None:
            return None
        return objective(self.teacher, self.scenario.distill_settings())


@dataclass(frozen=True)
class Trained:
    metrics: dict[str, float]
    # The model the user keeps, evaluates and exports, when it is not the one sent (Ditto).
    kept: nn.Module | None = None
    # Tensors for the next round (ClientState.algorithm), on the CPU.
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


class ClientAlgorithm:
    """Plain local training: every unpruned parameter trains for the round's epochs."""

    name: ClassVar[str] = PLAIN

    def train(self, work: LocalTraining) -> Trained:
        return Trained(train(work.model, work.data, work.settings, work.masks, seed=work.seed,
                             objective=work.final_objective()))

    def finetune(self, work: LocalTraining) -> Trained:
        """The final local round before export: the same training on the final round's budget
        (``work.settings``; distilled from the unpruned model with ``distill``: the final round is
        the only one with a teacher)."""
        return self.train(work)

    def kept_model(self, model: nn.Module, scenario: Scenario, state: ClientState | None) -> nn.Module:
        """The model this client uses between rounds (what a round's evaluation scores), from the
        merged model and its state; ``model`` may be changed in place."""
        return model


def saved(state: ClientState | None, prefix: str) -> dict[str, torch.Tensor]:
    """An algorithm's tensors from the client's last round, by parameter name."""
    kept = state.algorithm if state is not None else {}
    return {name.removeprefix(prefix): value for name, value in kept.items() if name.startswith(prefix)}


def snapshot(model: nn.Module, names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of the model's parameters (all, or ``names``)."""
    return {name: value.detach().clone() for name, value in model.named_parameters() if names is None or name in names}


def load_parameters(model: nn.Module, values: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(value)


def to_cpu(values: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """State tensors under ``prefix``: CPU copies, so any store can hold them."""
    return {f"{prefix}{name}": value.detach().cpu().clone() for name, value in values.items()}

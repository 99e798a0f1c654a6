"""FedALA (Zhang et al. 2023): adaptive local aggregation of the global model into the local one.

Before local training, the client blends the global model it received into its own
local model (the one it trained last round) for the model's top parameter groups:
``W * global + (1 - W) * local``, element-wise, with weights W in [0, 1] that it
learns on a sample of its data (gradient steps on the loss of the blended model,
clipped to [0, 1]); the lower groups are taken from the global model, as in FedAvg.
Then it trains locally and sends everything, as in FedAvg.

As in the authors' code, the weights start at 1 (the global model), the first
participation skips the blending (the local model is the global one then), and the
weights persist per client. The first learning runs ``ala-start-epochs`` epochs over
the sample (the paper: until the loss settles), later ones one epoch. The local top
groups and the weights live in the client's state, so a resumed run goes on alike.
"""

from __future__ import annotations

import torch
from timm.models import group_parameters
from torch import nn
from torch.func import functional_call

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
from fedhei.models.adapters import adapter_for, task_for
from fedhei.models.tasks import Batches, Task
from fedhei.training.loops import train

LOCAL = "fedala-local/"
WEIGHTS = "fedala-weights/"
Tensors = dict[str, torch.Tensor]


def top_parameters(model: nn.Module, groups: int) -> list[str]:
    """The parameters of the model's top ``groups`` parameter groups (timm's coarse groups, from
    its architecture adapter: the head, then each block from the last; all of them when
    ``groups`` exceeds their count)."""
    found = group_parameters(model, adapter_for(model).parameter_groups(model))
    return [name for key in sorted(found)[-groups:] for name in found[key]]


class _TaskLoss(nn.Module):
    """The model's task loss as one module call, so that ``functional_call`` can swap blended
    parameters into the model whatever its inputs are (images, or token ids)."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.task.loss(self.model, inputs, targets)


def blend(received: Tensors, local: Tensors, weights: Tensors) -> Tensors:
    """``W * global + (1 - W) * local``: exactly the global values where W is 1, the local ones where it is 0."""
    return {name: weights[name] * received[name] + (1 - weights[name]) * local[name] for name in received}


def learn_weights(model: nn.Module, received: Tensors, local: Tensors, weights: Tensors, data: Batches,
                  lr: float, epochs: int, batch_size: int) -> Tensors:
    """Gradient steps on the blending weights, each clipped to [0, 1]; the model itself does not change."""
    if len(data) == 0 or lr == 0:
        return weights
    device = next(model.parameters()).device
    trainable = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    was_training = model.training
    model.eval().requires_grad_(False)
    task_loss = _TaskLoss(model, task_for(model))
    try:
        for _ in range(epochs):
            for inputs, targets in data.batches(batch_size):
                leaves = {name: value.detach().requires_grad_(True) for name, value in weights.items()}
                blended = {f"model.{name}": value for name, value in blend(received, local, leaves).items()}
                loss = functional_call(task_loss, blended, (inputs.to(device), targets.to(device)), strict=False)
                gradients = torch.autograd.grad(loss, list(leaves.values()))
                weights = {name: (leaves[name].detach() - lr * gradient).clamp_(0, 1)
                           for name, gradient in zip(leaves, gradients, strict=True)}
    finally:
        model.train(was_training)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable[name])
    return weights


def _blending(model: nn.Module, state: ClientState | None) -> tuple[Tensors, Tensors, Tensors, bool] | None:
    """(global top, local top, weights, whether the weights were learned before), or None before the
    client has a local model of its own."""
    local = saved(state, LOCAL)
    if not local:
        return None
    device = next(model.parameters()).device
    received = snapshot(model, set(local))
    learned = saved(state, WEIGHTS)
    weights = {name: learned[name].to(device) if name in learned else torch.ones_like(value) for name, value in received.items()}
    return received, {name: value.to(device) for name, value in local.items()}, weights, bool(learned)


class FedALATraining(ClientAlgorithm):
    name = "fedala"

    def train(self, work: LocalTraining) -> Trained:
        weights = self.aggregate_locally(work)
        metrics = train(work.model, work.data, work.settings, work.masks, seed=work.seed)
        local = snapshot(work.model, set(top_parameters(work.model, work.scenario.ala_layers)))
        return Trained(metrics, tensors={**to_cpu(local, LOCAL), **to_cpu(weights, WEIGHTS)})

    def aggregate_locally(self, work: LocalTraining) -> Tensors:
        """Blend the received global model into the local one in place; the weights learned ({} the first time)."""
        blending = _blending(work.model, work.state)
        if blending is None:
            return {}
        received, local, weights, learned = blending
        scenario = work.scenario
        count = int(scenario.ala_sample * len(work.data))
        chosen = seeding.rng(work.seed, "ala-sample").choice(len(work.data), size=count, replace=False)
        weights = learn_weights(work.model, received, local, weights, work.data.subset(sorted(chosen)), scenario.ala_lr,
                                1 if learned else scenario.ala_start_epochs, scenario.batch_size)
        load_parameters(work.model, blend(received, local, weights))
        return weights

    def kept_model(self, model: nn.Module, scenario: Scenario, state: ClientState | None) -> nn.Module:
        """Between rounds: the blend with the weights learned so far (nothing is learned in an evaluation)."""
        blending = _blending(model, state)
        if blending is not None:
            received, local, weights, _ = blending
            load_parameters(model, blend(received, local, weights))
        return model

"""What every scorer shares: the scores it returns, the signals a perturbation is
measured on, and the helpers that perturb a layer and restore it exactly.

A scorer only measures. Role rules (:mod:`fedhei.method.roles`) and pruners
(:mod:`fedhei.method.pruning`) act on the :class:`LayerScores` it returns, so any
scorer works with any rule and any pruner, as an importance does in Torch-Pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedhei import seeding
from fedhei.errors import FedheiError
from fedhei.models.adapters import task_for
from fedhei.models.registry import linear_layers

Batch = tuple[torch.Tensor, torch.Tensor]
Calibration = Sequence[Batch]


@dataclass(frozen=True)
class LayerScores:
    """One sensitivity per linear layer, in forward order, and what measuring them cost."""

    layers: tuple[str, ...]
    scores: np.ndarray
    forward_passes: int
    scorer: str

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.scores):
            raise ValueError(f"{len(self.layers)} layers but {len(self.scores)} scores")


class Scorer(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores: ...


# --- signals: what a perturbation is measured on ---------------------------------------------


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


def _predictive_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The "entropy increase" of HEI: how unsure the model becomes, whatever the labels say."""
    log_probs = F.log_softmax(logits, dim=1)
    return -(log_probs.exp() * log_probs).sum()


# Each maps flat (logits, labels), one row per prediction (an image, or a token of a text:
# the model's task flattens them), to the signal summed over the batch.
SIGNALS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "loss": _cross_entropy,
    "entropy": _predictive_entropy,
}


def measure_signal(model: nn.Module, calibration: Calibration, signal: str) -> float:
    """Mean signal per prediction over the calibration batches (per image, or per token: the
    loss is then the log-perplexity): one forward pass per batch."""
    reduce = SIGNALS[signal]
    task = task_for(model)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in calibration:
            logits, labels = task.predictions(model, inputs.to(device), targets.to(device))
            total += reduce(logits, labels).item()
            count += labels.numel()
    return total / count


@contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode while measuring (no dropout noise), then the caller's mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


Hook = Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]


def forward_with_hooks(model: nn.Module, calibration: Calibration, hooks: Sequence[tuple[nn.Module, Hook]]) -> None:
    """One forward pass per calibration batch, in eval mode and without gradients, with
    each forward hook attached to its module for the duration only."""
    device = next(model.parameters()).device
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        with measuring(model), torch.no_grad():
            for images, _ in calibration:
                model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()


def random_drops(model: nn.Module, layers: Sequence[str], prob: float, seed: int) -> dict[str, torch.Tensor]:
    """For each layer, the flat indices of ``round(prob * n)`` of its weights, drawn at random.

    Each layer's draw depends only on the seed and its position, and is drawn once:
    a layer perturbs every measurement it joins in the same way, so a measurement
    of several layers is comparable with the measurements of each alone (common
    random numbers), and ``sensing`` and ``exhaustive`` perturb alike for one seed.
    """
    modules = dict(model.named_modules())
    drops = {}
    for index, name in enumerate(layers):
        count = modules[name].weight.numel()
        generator = seeding.torch_generator(seed, "perturbation-drops", index)
        drops[name] = torch.randperm(count, generator=generator)[: round(prob * count)]
    return drops


@contextmanager
def perturbed(model: nn.Module, drops: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Zero the given weights of each named layer (random pruning), restoring them exactly on exit."""
    modules = dict(model.named_modules())
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, dropped in drops.items():
                weight = modules[name].weight
                saved.append((weight, weight.detach().clone()))
                weight.view(-1)[dropped.to(weight.device)] = 0.0
        yield
    finally:
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


def check_calibration(calibration: Calibration) -> None:
    if len(calibration) == 0 or sum(len(labels) for _, labels in calibration) == 0:
        raise FedheiError("no calibration data: the user's training split is empty or calibration-batches is 0")


def layer_names(model: nn.Module) -> tuple[str, ...]:
    names = tuple(layer.name for layer in linear_layers(model))
    if not names:
        raise FedheiError(f"{type(model).__name__} has no linear layers to score")
    return names



def linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    modules = dict(model.named_modules())
    return {name: modules[name] for name in layer_names(model)}


"""Gradient scorers: what the loss on the user's data says about each layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from fedhei.method.scoring.base import Calibration, LayerScores, check_calibration, linear_modules, measuring
from fedhei.models.adapters import task_for


@dataclass(frozen=True)
class FisherScorer:
    """Empirical Fisher information: squared loss gradients of the layer's weights,
    summed over the calibration batches and averaged over the weights, so large
    layers do not win by size alone. One forward (and backward) pass per batch."""

    name: str = "fisher"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        modules = linear_modules(model)
        task = task_for(model)
        device = next(model.parameters()).device
        saved_grads = {name: param.grad for name, param in model.named_parameters()}
        totals = dict.fromkeys(modules, 0.0)
        try:
            with measuring(model):
                for inputs, targets in calibration:
                    model.zero_grad(set_to_none=True)
                    task.loss(model, inputs.to(device), targets.to(device)).backward()
                    for name, module in modules.items():
                        totals[name] += module.weight.grad.detach().pow(2).mean().item()
        finally:
            for name, param in model.named_parameters():
                param.grad = saved_grads[name]
        return LayerScores(tuple(modules), np.asarray(list(totals.values())), len(calibration), self.name)


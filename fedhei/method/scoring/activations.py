"""Activation scorers: what flows through each layer on the user's data, read with forward hooks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedhei.method.scoring.base import Calibration, Hook, LayerScores, check_calibration, forward_with_hooks, linear_modules


@dataclass(frozen=True)
class ActivationScorer:
    """Activation energy: the mean squared output of the layer on the user's data,
    read with forward hooks. One forward pass per batch."""

    name: str = "activation"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        modules = linear_modules(model)
        totals = dict.fromkeys(modules, 0.0)

        def recorder(name: str) -> Hook:
            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                totals[name] += output.detach().pow(2).mean().item()

            return record

        forward_with_hooks(model, calibration, [(module, recorder(name)) for name, module in modules.items()])
        scores = np.asarray(list(totals.values())) / len(calibration)
        return LayerScores(tuple(modules), scores, len(calibration), self.name)

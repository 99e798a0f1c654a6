"""Scorers that read the weights alone: no data, no forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedhei.method.scoring.base import Calibration, LayerScores, linear_modules


@dataclass(frozen=True)
class MagnitudeScorer:
    """Mean absolute weight: large weights are taken to carry what the layer knows. No data."""

    name: str = "magnitude"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        modules = linear_modules(model)
        scores = [module.weight.detach().abs().mean().item() for module in modules.values()]
        return LayerScores(tuple(modules), np.asarray(scores), 0, self.name)


@dataclass(frozen=True)
class WeightEntropyScorer:
    """Shannon entropy of the layer's weight histogram, in bits: a spread-out weight
    distribution holds more information than one piled up near zero. No data."""

    bins: int = 64
    name: str = "weight-entropy"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        modules = linear_modules(model)
        scores = []
        for module in modules.values():
            weight = module.weight.detach().float().flatten().cpu()
            counts = torch.histc(weight, bins=self.bins, min=weight.min().item(), max=weight.max().item())
            probabilities = counts[counts > 0] / counts.sum()
            scores.append(abs(float((probabilities * probabilities.log2()).sum())))
        return LayerScores(tuple(modules), np.asarray(scores), 0, self.name)


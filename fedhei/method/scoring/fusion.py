"""Fused scorers, after "Strategic Fusion" (arXiv 2501.03273): the single signals of a
layer form its feature vector, and a regressor learns from other users' models how
those features predict the measured (``exhaustive``) sensitivity. A new user's layers
are then ranked at the cost of its cheap signals alone.

A fused scorer needs fitted weights: exhaustive scores of other users' models. A
federated client holds only its own data and cannot get them, so the registry marks
the fused scorers as not buildable by a client on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedhei import seeding
from fedhei.errors import FedheiError
from fedhei.method.scoring.activations import ActivationScorer
from fedhei.method.scoring.attention import AttentionEntropyScorer
from fedhei.method.scoring.base import Calibration, LayerScores, Scorer
from fedhei.method.scoring.gradients import FisherScorer
from fedhei.method.scoring.weights import MagnitudeScorer, WeightEntropyScorer
from fedhei.models.registry import linear_layers

# The single signals a layer's feature vector is made of, in feature order.
FUSED_SIGNALS: tuple[Scorer, ...] = (
    MagnitudeScorer(),
    WeightEntropyScorer(),
    FisherScorer(),
    ActivationScorer(),
    AttentionEntropyScorer(),
)
# Where the layer sits, known without any pass: its depth in forward order and its kind.
LAYER_KINDS = ("qkv", "proj", "fc1", "fc2", "head")


def _standardized(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread over one model's layers: scales differ from user to user
    (and from signal to signal), the ranking within a model is what carries over."""
    spread = values.std()
    return (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)


@dataclass(frozen=True)
class LayerFeatures:
    """One model's per-layer feature matrix (layers x features), and the passes it cost."""

    layers: tuple[str, ...]
    matrix: np.ndarray
    forward_passes: int


def layer_features(model: nn.Module, calibration: Calibration, seed: int) -> LayerFeatures:
    """The fused scorers' inputs: each single signal standardized over the model's layers,
    then the layer's relative depth and a one-hot of its kind."""
    inventory = linear_layers(model)
    columns, passes = [], 0
    for scorer in FUSED_SIGNALS:
        scores = scorer(model, calibration, seed)
        columns.append(_standardized(np.nan_to_num(np.asarray(scores.scores, dtype=np.float64))))
        passes += scores.forward_passes
    depth = np.arange(len(inventory), dtype=np.float64) / max(1, len(inventory) - 1)
    kinds = np.asarray([[float(layer.kind == kind) for kind in LAYER_KINDS] for layer in inventory])
    matrix = np.column_stack([*columns, depth, kinds])
    return LayerFeatures(tuple(layer.name for layer in inventory), matrix, passes)


@dataclass(frozen=True)
class FusionExample:
    """Another user's model: its layer features and its measured (exhaustive) sensitivities."""

    features: LayerFeatures
    sensitivity: np.ndarray

    @classmethod
    def measure(cls, model: nn.Module, calibration: Calibration, seed: int, reference: Scorer) -> FusionExample:
        return cls(layer_features(model, calibration, seed), np.asarray(reference(model, calibration, seed).scores))


def _linear(seed: int) -> object:
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


def _forest(seed: int) -> object:
    from sklearn.ensemble import RandomForestRegressor

    state = int(seeding.rng(seed, "fusion-forest").integers(2**32))  # scikit-learn takes 32-bit seeds
    return RandomForestRegressor(n_estimators=200, min_samples_leaf=2, random_state=state)


REGRESSORS: dict[str, Callable[[int], object]] = {"linear": _linear, "forest": _forest}


@dataclass(frozen=True)
class FusedScorer:
    """Predicted sensitivity from the cheap signals, by a regressor fitted on ``training``
    (other users' models). Targets are standardized per model like the features, so the
    regressor learns rankings, not one user's loss scale. Costs what its signals cost."""

    regressor: str
    training: tuple[FusionExample, ...]
    name: str

    def __post_init__(self) -> None:
        if self.regressor not in REGRESSORS:
            raise FedheiError(f"unknown fusion regressor '{self.regressor}'; choose one of: {', '.join(REGRESSORS)}")
        if not self.training:
            raise FedheiError(f"scorer '{self.name}' needs weights fitted on other users' exhaustive scores; "
                              "give it training examples (fedhei compress measures them on other clients)")

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        features = layer_features(model, calibration, seed)
        widths = {example.features.matrix.shape[1] for example in self.training} | {features.matrix.shape[1]}
        if len(widths) != 1:
            raise FedheiError(f"scorer '{self.name}' was fitted on models with other layer features; "
                              "fit it on models of the same architecture")
        regressor = REGRESSORS[self.regressor](seed)
        regressor.fit(np.vstack([example.features.matrix for example in self.training]),
                      np.concatenate([_standardized(example.sensitivity) for example in self.training]))
        predicted = np.asarray(regressor.predict(features.matrix), dtype=np.float64)
        return LayerScores(features.layers, predicted, features.forward_passes, self.name)


def leave_one_out(examples: Sequence[FusionExample], regressor: str, name: str) -> list[FusedScorer]:
    """For each model, a fused scorer fitted on all the others."""
    return [FusedScorer(regressor, tuple(other for j, other in enumerate(examples) if j != i), name)
            for i in range(len(examples))]

"""Layer scorers: one sensitivity per linear layer, higher meaning more personal.

A scorer only measures. Role rules (:mod:`fedhei.roles`) and pruners
(:mod:`fedhei.pruning`) act on the :class:`LayerScores` it returns, so any scorer
works with any rule and any pruner, as an importance does in Torch-Pruning.

The HEI scorers perturb layers by random sampling (random pruning of a layer's
weights at ratio ``prob``) and measure how a signal on the user's calibration
batches moves: ``exhaustive`` perturbs one layer at a time, ``sensing`` perturbs
random subsets and recovers the per-layer sensitivities by sparse recovery.
The single-signal scorers (after "Strategic Fusion", arXiv 2501.03273) read one
cheap signal per layer instead: weights, gradients or activations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedhei.errors import FedheiError
from fedhei.models import linear_layers

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


# Each maps (logits, labels) to the signal summed over the batch.
SIGNALS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "loss": _cross_entropy,
    "entropy": _predictive_entropy,
}


def measure_signal(model: nn.Module, calibration: Calibration, signal: str) -> float:
    """Mean signal per example over the calibration batches: one forward pass per batch."""
    reduce = SIGNALS[signal]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for images, labels in calibration:
            total += reduce(model(images.to(device)), labels.to(device)).item()
            count += len(labels)
    return total / count


@contextmanager
def _measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode while measuring (no dropout noise), then the caller's mode back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


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
        generator = torch.Generator().manual_seed(seed * 100_003 + index)
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


def _check_calibration(calibration: Calibration) -> None:
    if len(calibration) == 0 or sum(len(labels) for _, labels in calibration) == 0:
        raise FedheiError("no calibration data: the user's training split is empty or calibration-batches is 0")


def _layer_names(model: nn.Module) -> tuple[str, ...]:
    names = tuple(layer.name for layer in linear_layers(model))
    if not names:
        raise FedheiError(f"{type(model).__name__} has no linear layers to score")
    return names


# --- HEI: exhaustive reference and compressed sensing --------------------------------------------


@dataclass(frozen=True)
class ExhaustiveScorer:
    """One layer at a time: L measurements for L layers, the reference for ``sensing``."""

    signal: str = "loss"
    prob: float = 0.5
    name: str = "exhaustive"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        _check_calibration(calibration)
        layers = _layer_names(model)
        drops = random_drops(model, layers, self.prob, seed)
        with _measuring(model):
            base = measure_signal(model, calibration, self.signal)
            scores = []
            for layer in layers:
                with perturbed(model, {layer: drops[layer]}):
                    scores.append(measure_signal(model, calibration, self.signal) - base)
        return LayerScores(layers, np.asarray(scores), (len(layers) + 1) * len(calibration), self.name)


def _solve_lasso(matrix: np.ndarray, measured: np.ndarray, alpha_fraction: float) -> np.ndarray:
    """Lasso, its penalty a fraction of the smallest one that zeroes every layer, so the
    setting means the same whatever the scale of the signal. Coefficients may be
    negative: pruning some layers lowers the loss, and forcing them to zero would push
    that effect into the estimates of the layers measured with them."""
    from sklearn.linear_model import Lasso

    alpha_max = float(np.abs(matrix.T @ measured).max()) / len(measured)
    if alpha_max == 0.0:
        return np.zeros(matrix.shape[1])
    solver = Lasso(alpha=alpha_fraction * alpha_max, positive=False, fit_intercept=False, max_iter=50_000)
    return solver.fit(matrix, measured).coef_.copy()


def _solve_omp(matrix: np.ndarray, measured: np.ndarray, alpha_fraction: float) -> np.ndarray:
    """Orthogonal matching pursuit with at most half as many layers as measurements:
    beyond that the support is not identifiable from the measurements."""
    from sklearn.linear_model import OrthogonalMatchingPursuit

    nonzero = max(1, min(matrix.shape[1], len(measured) // 2))
    return OrthogonalMatchingPursuit(n_nonzero_coefs=nonzero, fit_intercept=False).fit(matrix, measured).coef_.copy()


SOLVERS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "lasso": _solve_lasso,
    "omp": _solve_omp,
}


def measurement_count(measurements: float, layers: int) -> int:
    """``measurements`` <= 1 is a fraction of the layer count (rounded down, at least 1), else a count."""
    if measurements <= 1:
        return max(1, math.floor(measurements * layers + 1e-9))
    return int(measurements)


def sensing_matrix(rows: int, layers: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Random 0/1 matrix in which every layer joins the same number of measurements,
    round(density * rows) but at least two (where there are two), and no two layers
    share the same set where the rows allow it. A layer measured once can only be
    told apart from the others of its subset by chance, and one perturbed exactly
    with another not at all, whatever the solver."""
    per_layer = min(rows, max(2, round(density * rows)))
    matrix = np.zeros((rows, layers))
    seen: set[tuple[int, ...]] = set()
    distinct = math.comb(rows, per_layer)
    for column in range(layers):
        chosen = tuple(sorted(rng.choice(rows, size=per_layer, replace=False).tolist()))
        while chosen in seen and len(seen) < distinct:
            chosen = tuple(sorted(rng.choice(rows, size=per_layer, replace=False).tolist()))
        seen.add(chosen)
        matrix[list(chosen), column] = 1.0
    return matrix


@dataclass(frozen=True)
class SensingScorer:
    """HEI's compressed sensing: m random subsets of layers, one measurement each,
    per-layer sensitivities recovered from y = A s + noise by sparse recovery.

    ``density`` is the fraction of the measurements each layer joins (at least one).
    Small subsets keep each measurement near the additive regime that y = A s
    assumes: on vit-tiny-c10, perturbing about five layers at once can move the loss
    well beyond the sum of their single-layer changes, and role agreement with
    ``exhaustive`` fell as density rose from 0.1 to 0.3 (measured with
    benchmarks/sensing_vs_exhaustive.py). ``lasso_alpha`` is the Lasso penalty as a
    fraction of the smallest penalty that zeroes every layer.
    """

    signal: str = "loss"
    prob: float = 0.5
    measurements: float = 0.5
    solver: str = "lasso"
    density: float = 0.1
    lasso_alpha: float = 0.001
    name: str = "sensing"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        _check_calibration(calibration)
        layers = _layer_names(model)
        rows = measurement_count(self.measurements, len(layers))
        matrix = sensing_matrix(rows, len(layers), self.density, np.random.default_rng([seed, len(layers), rows]))
        drops = random_drops(model, layers, self.prob, seed)
        with _measuring(model):
            base = measure_signal(model, calibration, self.signal)
            measured = []
            for row in matrix:
                with perturbed(model, {layers[index]: drops[layers[index]] for index in np.flatnonzero(row)}):
                    measured.append(measure_signal(model, calibration, self.signal) - base)
        scores = SOLVERS[self.solver](matrix, np.asarray(measured), self.lasso_alpha)
        return LayerScores(layers, scores, (rows + 1) * len(calibration), self.name)


# --- single-signal scorers -----------------------------------------------------------------------


def _linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    modules = dict(model.named_modules())
    return {name: modules[name] for name in _layer_names(model)}


@dataclass(frozen=True)
class MagnitudeScorer:
    """Mean absolute weight: large weights are taken to carry what the layer knows. No data."""

    name: str = "magnitude"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        modules = _linear_modules(model)
        scores = [module.weight.detach().abs().mean().item() for module in modules.values()]
        return LayerScores(tuple(modules), np.asarray(scores), 0, self.name)


@dataclass(frozen=True)
class WeightEntropyScorer:
    """Shannon entropy of the layer's weight histogram, in bits: a spread-out weight
    distribution holds more information than one piled up near zero. No data."""

    bins: int = 64
    name: str = "weight-entropy"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        modules = _linear_modules(model)
        scores = []
        for module in modules.values():
            weight = module.weight.detach().float().flatten().cpu()
            counts = torch.histc(weight, bins=self.bins, min=weight.min().item(), max=weight.max().item())
            probabilities = counts[counts > 0] / counts.sum()
            scores.append(abs(float((probabilities * probabilities.log2()).sum())))
        return LayerScores(tuple(modules), np.asarray(scores), 0, self.name)


@dataclass(frozen=True)
class FisherScorer:
    """Empirical Fisher information: squared loss gradients of the layer's weights,
    summed over the calibration batches and averaged over the weights, so large
    layers do not win by size alone. One forward (and backward) pass per batch."""

    name: str = "fisher"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        _check_calibration(calibration)
        modules = _linear_modules(model)
        device = next(model.parameters()).device
        saved_grads = {name: param.grad for name, param in model.named_parameters()}
        totals = dict.fromkeys(modules, 0.0)
        try:
            with _measuring(model):
                for images, labels in calibration:
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(model(images.to(device)), labels.to(device)).backward()
                    for name, module in modules.items():
                        totals[name] += module.weight.grad.detach().pow(2).mean().item()
        finally:
            for name, param in model.named_parameters():
                param.grad = saved_grads[name]
        return LayerScores(tuple(modules), np.asarray(list(totals.values())), len(calibration), self.name)


@dataclass(frozen=True)
class ActivationScorer:
    """Activation energy: the mean squared output of the layer on the user's data,
    read with forward hooks. One forward pass per batch."""

    name: str = "activation"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        _check_calibration(calibration)
        modules = _linear_modules(model)
        device = next(model.parameters()).device
        totals = dict.fromkeys(modules, 0.0)

        def recorder(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                totals[name] += output.detach().pow(2).mean().item()

            return record

        handles = [module.register_forward_hook(recorder(name)) for name, module in modules.items()]
        try:
            with _measuring(model), torch.no_grad():
                for images, _ in calibration:
                    model(images.to(device))
        finally:
            for handle in handles:
                handle.remove()
        scores = np.asarray(list(totals.values())) / len(calibration)
        return LayerScores(tuple(modules), scores, len(calibration), self.name)


# --- registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorerSettings:
    signal: str = "loss"
    prob: float = 0.5
    measurements: float = 0.5
    solver: str = "lasso"


_SCORERS: dict[str, Callable[[ScorerSettings], Scorer]] = {
    "exhaustive": lambda s: ExhaustiveScorer(signal=s.signal, prob=s.prob),
    "sensing": lambda s: SensingScorer(signal=s.signal, prob=s.prob, measurements=s.measurements, solver=s.solver),
    "magnitude": lambda s: MagnitudeScorer(),
    "weight-entropy": lambda s: WeightEntropyScorer(),
    "fisher": lambda s: FisherScorer(),
    "activation": lambda s: ActivationScorer(),
}
SCORER_NAMES: tuple[str, ...] = tuple(_SCORERS)


def _choices(options: Iterable[str]) -> str:
    return ", ".join(options)


def build_scorer(
    name: str, *, signal: str = "loss", prob: float = 0.5, measurements: float = 0.5, solver: str = "lasso"
) -> Scorer:
    """The scorer registered under ``name``; bad names or settings are user errors."""
    if name not in _SCORERS:
        raise FedheiError(f"unknown scorer '{name}'; choose one of: {_choices(SCORER_NAMES)}")
    if signal not in SIGNALS:
        raise FedheiError(f"unknown signal '{signal}'; choose one of: {_choices(SIGNALS)}")
    if solver not in SOLVERS:
        raise FedheiError(f"unknown sensing solver '{solver}'; choose one of: {_choices(SOLVERS)}")
    if not 0 < prob < 1:
        raise FedheiError(f"perturbation prob is {prob}; it must be in (0, 1)")
    if not measurements > 0 or (measurements > 1 and measurements != int(measurements)):
        raise FedheiError(f"measurements is {measurements}; give a fraction of the layer count in (0, 1] "
                          "or a whole number of measurements")
    return _SCORERS[name](ScorerSettings(signal=signal, prob=prob, measurements=measurements, solver=solver))

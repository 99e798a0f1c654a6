"""HEI's scorers: perturb layers by random sampling (random pruning of a layer's
weights at ratio ``prob``) and measure how a signal on the user's calibration
batches moves. ``exhaustive`` perturbs one layer at a time; ``sensing`` perturbs
random subsets and recovers the per-layer sensitivities by sparse recovery.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedhei.method.scoring.base import (
    Calibration,
    LayerScores,
    check_calibration,
    layer_names,
    measure_signal,
    measuring,
    perturbed,
    random_drops,
)


@dataclass(frozen=True)
class ExhaustiveScorer:
    """One layer at a time: L measurements for L layers, the reference for ``sensing``."""

    signal: str = "loss"
    prob: float = 0.5
    name: str = "exhaustive"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        layers = layer_names(model)
        drops = random_drops(model, layers, self.prob, seed)
        with measuring(model):
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
        check_calibration(calibration)
        layers = layer_names(model)
        rows = measurement_count(self.measurements, len(layers))
        matrix = sensing_matrix(rows, len(layers), self.density, np.random.default_rng([seed, len(layers), rows]))
        drops = random_drops(model, layers, self.prob, seed)
        with measuring(model):
            base = measure_signal(model, calibration, self.signal)
            measured = []
            for row in matrix:
                with perturbed(model, {layers[index]: drops[layers[index]] for index in np.flatnonzero(row)}):
                    measured.append(measure_signal(model, calibration, self.signal) - base)
        scores = SOLVERS[self.solver](matrix, np.asarray(measured), self.lasso_alpha)
        return LayerScores(layers, scores, (rows + 1) * len(calibration), self.name)


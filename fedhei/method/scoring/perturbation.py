"""HEI's scorers: perturb layers by random sampling (random pruning of a layer's
weights at ratio ``prob``) and measure how a signal on the user's calibration
batches moves. ``exhaustive`` perturbs one layer at a time; ``sensing`` perturbs
groups of layers and recovers the per-layer sensitivities from fewer measurements,
by one of three designs (:data:`DESIGNS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from fedhei import seeding
from fedhei.errors import FedheiError
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
from fedhei.models.registry import linear_layers


class _Probe:
    """Measures y(S): the signal with the layers S perturbed minus the unperturbed signal,
    and counts the forward passes spent (the unperturbed signal on every batch first).

    With ``rotate``, each measurement runs on one calibration batch, the next one each
    time, instead of on all of them: more measurements for the same passes, each noisier.
    """

    def __init__(self, model: nn.Module, calibration: Calibration, signal: str, prob: float, seed: int,
                 rotate: bool = False) -> None:
        self.model, self.calibration, self.signal, self.rotate = model, calibration, signal, rotate
        self.layers = layer_names(model)
        self.drops = random_drops(model, self.layers, prob, seed)
        self.sizes = [len(labels) for _, labels in calibration]
        self.base = [measure_signal(model, [batch], signal) for batch in calibration]
        self.passes = len(calibration)
        self.measurements = 0

    def __call__(self, indices: Sequence[int]) -> float:
        batches = [self.measurements % len(self.calibration)] if self.rotate else range(len(self.calibration))
        with perturbed(self.model, {self.layers[index]: self.drops[self.layers[index]] for index in indices}):
            changes = [self.sizes[b] * (measure_signal(self.model, [self.calibration[b]], self.signal) - self.base[b])
                       for b in batches]
        self.measurements += 1
        self.passes += len(batches)
        return sum(changes) / sum(self.sizes[b] for b in batches)


@dataclass(frozen=True)
class ExhaustiveScorer:
    """One layer at a time: L measurements for L layers, the reference for ``sensing``."""

    signal: str
    prob: float
    name: str = "exhaustive"

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        with measuring(model):
            probe = _Probe(model, calibration, self.signal, self.prob, seed)
            scores = [probe([index]) for index in range(len(probe.layers))]
        return LayerScores(probe.layers, np.asarray(scores), probe.passes, self.name)


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

# What the sparse recovery takes to be sparse: the sensitivities themselves (most layers
# near zero, the personalized few stand out), or each layer's deviation from a level
# that all layers share (generic layers are the common background, whatever its height).
LEVELS = ("zero", "shared")


def _recover(matrix: np.ndarray, measured: np.ndarray, solver: str, alpha_fraction: float, level: str) -> np.ndarray:
    """Per-layer sensitivities from y = A s. With the shared level, the level is fitted
    first by least squares (a measurement of k layers moves by k times the level), and
    only the deviations from it are recovered as the sparse signal."""
    if level == "zero":
        return SOLVERS[solver](matrix, measured, alpha_fraction)
    sizes = matrix.sum(axis=1)
    shared = float(sizes @ measured / (sizes @ sizes)) if sizes.any() else 0.0
    return shared + SOLVERS[solver](matrix, measured - shared * sizes, alpha_fraction)


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


def _random_design(scorer: SensingScorer, probe: _Probe, rows: int, model: nn.Module, seed: int) -> np.ndarray:
    """The first design: a random sparse 0/1 matrix, one measurement per row, then sparse recovery."""
    layers = len(probe.layers)
    matrix = sensing_matrix(rows, layers, scorer.density, seeding.rng(seed, "sensing-matrix", layers, rows))
    measured = np.asarray([probe(np.flatnonzero(row)) for row in matrix])
    return _recover(matrix, measured, scorer.solver, scorer.lasso_alpha, scorer.level)


def _signed_design(scorer: SensingScorer, probe: _Probe, rows: int, model: nn.Module, seed: int) -> np.ndarray:
    """Rademacher rows from complements: a random half S of the layers and the other half
    are measured apart, and y(S) - y(rest) is a +/-1 measurement of the sensitivities
    (two measurements per row). Their common interactions cancel in the difference."""
    layers = len(probe.layers)
    rng = seeding.rng(seed, "sensing-signs", layers, rows)
    matrix = np.ones((max(1, rows // 2), layers))
    measured = []
    for row in matrix:
        row[rng.choice(layers, size=layers // 2, replace=False)] = -1.0
        measured.append(probe(np.flatnonzero(row > 0)) - probe(np.flatnonzero(row < 0)))
    return _recover(matrix, np.asarray(measured), scorer.solver, scorer.lasso_alpha, "zero")


def block_units(model: nn.Module) -> list[tuple[int, ...]]:
    """Layer indices grouped by the model's own blocks (timm's block index), in forward
    order; a layer outside the blocks (the head) is a unit of its own."""
    units: dict[tuple[str, int], list[int]] = {}
    for index, layer in enumerate(linear_layers(model)):
        units.setdefault(("block", layer.block) if layer.block >= 0 else ("layer", index), []).append(index)
    return [tuple(unit) for unit in units.values()]


def _block_design(scorer: SensingScorer, probe: _Probe, budget: int, model: nn.Module, seed: int) -> np.ndarray:
    """Hierarchical group testing along the model's blocks.

    Every unit (a block, or a layer outside the blocks) is measured as one group; with
    fewer measurements than units, adjacent units are merged into as many groups as
    there are measurements. While the budget lasts, the group with the largest change
    whose parts all fit in what is left is split, and its parts measured: a merged group
    into its units, a block into its layers. A layer's score is the change of the
    smallest group measured with it, shared equally by that group's layers, so layers
    of a block never split tie, and the role rules break the tie by forward order.

    Sensitivity on ViTs is mostly a matter of depth (which blocks) and a few large
    layers, and a block's layers perturbed together stay near enough to additive to
    rank blocks, where random subsets of many blocks do not (docs/compression.md).
    """
    units = block_units(model)
    parts = {unit: [(index,) for index in unit] for unit in units if len(unit) > 1}
    top = units
    if budget < len(units):
        merged = [[units[position] for position in chunk] for chunk in np.array_split(np.arange(len(units)), budget)]
        top = [tuple(index for unit in group for index in unit) for group in merged]
        parts.update({node: group for node, group in zip(top, merged, strict=True) if len(group) > 1})
    values = {node: probe(node) for node in top}
    frontier = [node for node in top if node in parts]
    while True:
        fitting = [node for node in frontier if probe.measurements + len(parts[node]) <= budget]
        if not fitting:
            break
        node = max(fitting, key=values.__getitem__)
        frontier.remove(node)
        for part in parts[node]:
            values[part] = probe(part)
            if part in parts:
                frontier.append(part)
    scores = np.zeros(len(probe.layers))
    for index in range(len(scores)):
        smallest = min((node for node in values if index in node), key=len)
        scores[index] = values[smallest] / len(smallest)
    return scores


DESIGNS: dict[str, Callable[[SensingScorer, _Probe, int, nn.Module, int], np.ndarray]] = {
    "blocks": _block_design,
    "random": _random_design,
    "signed": _signed_design,
}


@dataclass(frozen=True)
class SensingScorer:
    """HEI's compressed sensing: fewer measurements than layers, each perturbing a group
    of layers, and per-layer sensitivities recovered from them. ``measurements`` is the
    budget (a fraction of the layer count, or a count); a design may spend less. It and
    ``signal``, ``prob``, ``solver`` and ``design`` come from a scenario, which checks them.

    ``design`` (measured with benchmarks/sensing_vs_exhaustive.py, see docs/compression.md):

    - ``blocks``: hierarchical group testing along the model's blocks (see
      :func:`_block_design`). Deterministic for a seed; needs no solver.
    - ``random``: the first design, a random sparse 0/1 matrix in which every layer
      joins about ``density`` of the measurements (at least two), then sparse recovery
      (``solver``, ``level``). Small subsets keep each measurement near the additive
      regime that y = A s assumes.
    - ``signed``: Rademacher rows from complement pairs (see :func:`_signed_design`).

    ``rotate_batches`` runs each measurement on one calibration batch in turn instead of
    on all of them. ``lasso_alpha`` is the Lasso penalty as a fraction of the smallest
    penalty that zeroes every layer.
    """

    signal: str
    prob: float
    measurements: float
    solver: str
    design: str
    level: str = "zero"
    rotate_batches: bool = False
    density: float = 0.1
    lasso_alpha: float = 0.001
    name: str = "sensing"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise FedheiError(f"unknown sensing level '{self.level}'; choose one of: {', '.join(LEVELS)}")

    def __call__(self, model: nn.Module, calibration: Calibration, seed: int) -> LayerScores:
        check_calibration(calibration)
        with measuring(model):
            probe = _Probe(model, calibration, self.signal, self.prob, seed, rotate=self.rotate_batches)
            budget = measurement_count(self.measurements, len(probe.layers))
            scores = DESIGNS[self.design](self, probe, budget, model, seed)
        return LayerScores(probe.layers, scores, probe.passes, self.name)

"""Intervals for figures measured on clients of several seeds: a seeded two-stage bootstrap.

A run's clients are not independent of each other (they share the federation and the
partition that its seed drew), and different seeds draw different clients. So the
bootstrap resamples the way the data were made: first the seeds, with replacement;
then, within each drawn seed, its clients, with replacement. A resample's figure is
the mean over its drawn seeds of the statistic on that seed's drawn clients (a run's
mean accuracy, its worst decile, ...), and the interval is the percentile interval of
that figure over the resamples. With one seed this is the plain bootstrap over clients;
a figure with one value per run (bytes per round) resamples seeds only.

For a paired difference each unit is one client of one seed and its value is strategy
minus reference on that same client; the verdict says whether the interval excludes 0.
All draws come from a named seed stream, so the same inputs give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from fedhei import seeding

# A statistic maps (resamples, units) values to one figure per resample.
Statistic = Callable[[np.ndarray], np.ndarray]
RESAMPLES = 10_000
LEVEL = 0.95
BETTER, WORSE, NOT_RESOLVED = "better", "worse", "not resolved"


def mean(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=-1)


def worst_decile(values: ArrayLike, lower_is_better: bool = False) -> np.ndarray:
    """The edge of the worst tenth of the clients, over the last axis: the 10th percentile of an accuracy, the 90th
    of a figure where lower is better (perplexity). The one definition behind every summary, figure and interval."""
    return np.percentile(values, 90 if lower_is_better else 10, axis=-1)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    # Seeds and units (clients of all seeds) the figure rests on.
    groups: int
    units: int

    def verdict(self) -> str:
        """Better or worse only when the whole interval is on one side of zero."""
        if self.low > 0:
            return BETTER
        if self.high < 0:
            return WORSE
        return NOT_RESOLVED


def bootstrap(
    groups: Sequence[Sequence[float] | np.ndarray],
    statistic: Statistic = mean,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """The statistic averaged over groups (seeds), with its two-stage bootstrap interval."""
    arrays = [np.asarray(group, dtype=np.float64) for group in groups]
    if not arrays or any(array.ndim != 1 or array.size == 0 for array in arrays):
        raise ValueError("bootstrap needs at least one group, each a non-empty 1-D array of values")
    if not 0 < level < 1:
        raise ValueError(f"level is {level}; it must be in (0, 1)")
    estimate = float(np.mean([statistic(array[None, :])[0] for array in arrays]))
    rng = seeding.rng(seed, "bootstrap")
    drawn = rng.integers(0, len(arrays), size=(resamples, len(arrays)))
    totals = np.zeros(resamples)
    for slot in range(len(arrays)):
        for index, array in enumerate(arrays):
            rows = np.flatnonzero(drawn[:, slot] == index)
            if rows.size:
                totals[rows] += statistic(array[rng.integers(0, array.size, size=(rows.size, array.size))])
    figures = totals / len(arrays)
    tail = (1 - level) / 2
    low, high = np.quantile(figures, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), len(arrays), sum(array.size for array in arrays))

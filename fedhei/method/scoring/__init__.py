"""Layer scorers: one sensitivity per linear layer, higher meaning more personal.

One module per family (:mod:`.perturbation` for HEI's exhaustive and sensing
scorers, :mod:`.weights`, :mod:`.gradients`, :mod:`.activations` for the single
signals after "Strategic Fusion", arXiv 2501.03273), and this registry, which
builds any of them by name and checks its settings once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fedhei.errors import FedheiError
from fedhei.method.scoring.activations import ActivationScorer
from fedhei.method.scoring.base import SIGNALS, Calibration, LayerScores, Scorer
from fedhei.method.scoring.gradients import FisherScorer
from fedhei.method.scoring.perturbation import SOLVERS, ExhaustiveScorer, SensingScorer
from fedhei.method.scoring.weights import MagnitudeScorer, WeightEntropyScorer

__all__ = [
    "SCORER_NAMES",
    "ActivationScorer",
    "Calibration",
    "ExhaustiveScorer",
    "FisherScorer",
    "LayerScores",
    "MagnitudeScorer",
    "Scorer",
    "SensingScorer",
    "WeightEntropyScorer",
    "build_scorer",
]



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

"""Layer scorers: one sensitivity per linear layer, higher meaning more personal.

One module per family (:mod:`.perturbation` for HEI's exhaustive and sensing
scorers, :mod:`.weights`, :mod:`.gradients`, :mod:`.activations` and
:mod:`.attention` for the single signals after "Strategic Fusion", arXiv
2501.03273, and :mod:`.fusion` for the scorers that fuse them), and this registry,
which builds any of them by name, checks its settings once, and says which ones a
federated client can build from its own data alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fedhei.errors import FedheiError
from fedhei.method.scoring.activations import ActivationScorer
from fedhei.method.scoring.attention import AttentionEntropyScorer
from fedhei.method.scoring.base import SIGNALS, Calibration, LayerScores, Scorer
from fedhei.method.scoring.fusion import FusedScorer, FusionExample
from fedhei.method.scoring.gradients import FisherScorer
from fedhei.method.scoring.perturbation import DESIGNS, SOLVERS, ExhaustiveScorer, SensingScorer
from fedhei.method.scoring.weights import MagnitudeScorer, WeightEntropyScorer

__all__ = [
    "FEDERATED_SCORERS",
    "SCORER_NAMES",
    "SENSING_DESIGNS",
    "ActivationScorer",
    "AttentionEntropyScorer",
    "Calibration",
    "ExhaustiveScorer",
    "FisherScorer",
    "FusedScorer",
    "FusionExample",
    "LayerScores",
    "MagnitudeScorer",
    "Scorer",
    "SensingScorer",
    "WeightEntropyScorer",
    "build_scorer",
    "check_federated_scorer",
]


@dataclass(frozen=True)
class ScorerSettings:
    signal: str = "loss"
    prob: float = 0.5
    measurements: float = SensingScorer.measurements
    solver: str = "lasso"
    design: str = SensingScorer.design
    fusion_training: tuple[FusionExample, ...] = ()


@dataclass(frozen=True)
class _Entry:
    build: Callable[[ScorerSettings], Scorer]
    # A federated client can build it from its own model and data alone; the fused
    # scorers also need other users' exhaustive scores, which a client never sees.
    standalone: bool = True
    # It scores any model through its architecture adapter and task; attention entropy
    # reads timm ViT attention modules.
    any_model: bool = True


_SCORERS: dict[str, _Entry] = {
    "exhaustive": _Entry(lambda s: ExhaustiveScorer(signal=s.signal, prob=s.prob)),
    "sensing": _Entry(lambda s: SensingScorer(signal=s.signal, prob=s.prob, measurements=s.measurements, solver=s.solver,
                                              design=s.design)),
    "magnitude": _Entry(lambda s: MagnitudeScorer()),
    "weight-entropy": _Entry(lambda s: WeightEntropyScorer()),
    "fisher": _Entry(lambda s: FisherScorer()),
    "activation": _Entry(lambda s: ActivationScorer()),
    "attention-entropy": _Entry(lambda s: AttentionEntropyScorer(), any_model=False),
    "fused-linear": _Entry(lambda s: FusedScorer("linear", s.fusion_training, "fused-linear"), standalone=False),
    "fused-forest": _Entry(lambda s: FusedScorer("forest", s.fusion_training, "fused-forest"), standalone=False),
}
SCORER_NAMES: tuple[str, ...] = tuple(_SCORERS)
FEDERATED_SCORERS: tuple[str, ...] = tuple(name for name, entry in _SCORERS.items() if entry.standalone)
SENSING_DESIGNS: tuple[str, ...] = tuple(DESIGNS)


def _choices(options: Iterable[str]) -> str:
    return ", ".join(options)


def check_federated_scorer(name: str, language_model: bool = False) -> None:
    """A federated client builds its scorer alone, for its model: refuse the ones it cannot build."""
    if name in _SCORERS and not _SCORERS[name].standalone:
        raise FedheiError(f"scorer '{name}' needs weights fitted on other clients' exhaustive scores, which a "
                          f"federated client never sees; choose one of: {_choices(FEDERATED_SCORERS)}")
    if name not in _SCORERS:
        raise FedheiError(f"unknown scorer '{name}'; choose one of: {_choices(FEDERATED_SCORERS)}")
    if language_model and not _SCORERS[name].any_model:
        usable = (scorer for scorer in FEDERATED_SCORERS if _SCORERS[scorer].any_model)
        raise FedheiError(f"scorer '{name}' reads a ViT's attention and cannot score a language model; choose one of: "
                          f"{_choices(usable)}")


def build_scorer(
    name: str,
    *,
    signal: str = "loss",
    prob: float = 0.5,
    measurements: float = SensingScorer.measurements,
    solver: str = "lasso",
    design: str = SensingScorer.design,
    fusion_training: Sequence[FusionExample] = (),
) -> Scorer:
    """The scorer registered under ``name``; bad names or settings are user errors.

    ``fusion_training`` (other users' models, see :class:`FusionExample`) is what the
    fused scorers are fitted on; the others ignore it.
    """
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
    settings = ScorerSettings(signal=signal, prob=prob, measurements=measurements, solver=solver, design=design,
                              fusion_training=tuple(fusion_training))
    return _SCORERS[name].build(settings)

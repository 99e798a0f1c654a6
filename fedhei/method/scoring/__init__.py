"""Layer scorers: one sensitivity per linear layer, higher meaning more personal.

One module per family (:mod:`.perturbation` for HEI's exhaustive and sensing
scorers, :mod:`.weights`, :mod:`.gradients`, :mod:`.activations` and
:mod:`.attention` for the single signals after "Strategic Fusion", arXiv
2501.03273, and :mod:`.fusion` for the scorers that fuse them), and this registry,
which builds any of them by name and says which ones a federated client can build
from its own data alone. Their settings are declared and checked once, on the scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fedhei.method.scoring.activations import ActivationScorer
from fedhei.method.scoring.attention import AttentionEntropyScorer
from fedhei.method.scoring.base import SIGNALS, Calibration, LayerScores, Scorer
from fedhei.method.scoring.fusion import FusedScorer, FusionExample
from fedhei.method.scoring.gradients import FisherScorer
from fedhei.method.scoring.perturbation import DESIGNS, SOLVERS, ExhaustiveScorer, SensingScorer
from fedhei.method.scoring.weights import MagnitudeScorer, WeightEntropyScorer

__all__ = [
    "ANY_MODEL_SCORERS",
    "FEDERATED_SCORERS",
    "PERTURBING_SCORERS",
    "SCORER_NAMES",
    "SENSING_DESIGNS",
    "SIGNALS",
    "SOLVERS",
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
    "ScorerSettings",
    "SensingScorer",
    "WeightEntropyScorer",
    "build_scorer",
]


@dataclass(frozen=True)
class ScorerSettings:
    """What the perturbation scorers measure with; a scenario's ``scorer_settings()`` builds it from its settings."""

    signal: str
    prob: float
    measurements: float
    solver: str
    design: str


@dataclass(frozen=True)
class _Entry:
    build: Callable[[ScorerSettings, tuple[FusionExample, ...]], Scorer]
    # A federated client can build it from its own model and data alone; the fused
    # scorers also need other users' exhaustive scores, which a client never sees.
    standalone: bool = True
    # It scores any model through its architecture adapter and task; attention entropy
    # reads timm ViT attention modules.
    any_model: bool = True
    # It perturbs each layer by random pruning at ratio ``prob``, so it needs a prob above 0.
    perturbs: bool = False


_SCORERS: dict[str, _Entry] = {
    "exhaustive": _Entry(lambda s, f: ExhaustiveScorer(signal=s.signal, prob=s.prob), perturbs=True),
    "sensing": _Entry(lambda s, f: SensingScorer(signal=s.signal, prob=s.prob, measurements=s.measurements,
                                                 solver=s.solver, design=s.design), perturbs=True),
    "magnitude": _Entry(lambda s, f: MagnitudeScorer()),
    "weight-entropy": _Entry(lambda s, f: WeightEntropyScorer()),
    "fisher": _Entry(lambda s, f: FisherScorer()),
    "activation": _Entry(lambda s, f: ActivationScorer()),
    "attention-entropy": _Entry(lambda s, f: AttentionEntropyScorer(), any_model=False),
    "fused-linear": _Entry(lambda s, f: FusedScorer("linear", f, "fused-linear"), standalone=False),
    "fused-forest": _Entry(lambda s, f: FusedScorer("forest", f, "fused-forest"), standalone=False),
}
SCORER_NAMES: tuple[str, ...] = tuple(_SCORERS)
FEDERATED_SCORERS: tuple[str, ...] = tuple(name for name, entry in _SCORERS.items() if entry.standalone)
ANY_MODEL_SCORERS: tuple[str, ...] = tuple(name for name in FEDERATED_SCORERS if _SCORERS[name].any_model)
PERTURBING_SCORERS: tuple[str, ...] = tuple(name for name, entry in _SCORERS.items() if entry.perturbs)
SENSING_DESIGNS: tuple[str, ...] = tuple(DESIGNS)


def build_scorer(name: str, settings: ScorerSettings, fusion_training: Sequence[FusionExample] = ()) -> Scorer:
    """The scorer registered under ``name`` (one of :data:`SCORER_NAMES`), with settings a scenario has checked.

    ``fusion_training`` (other users' models, see :class:`FusionExample`) is what the
    fused scorers are fitted on; the others ignore it.
    """
    return _SCORERS[name].build(settings, tuple(fusion_training))

"""Layer roles: which linear layers are personalized and which are generic.

A rule turns a scorer's :class:`~fedhei.method.scoring.LayerScores` into a :class:`RoleMap`;
rules know nothing of how the scores were measured, and pruners know nothing of
how the roles were decided. Random and uniform role maps are the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedhei import seeding
from fedhei.errors import FedheiError
from fedhei.method.scoring.base import LayerScores

PERSONALIZED = "personalized"
GENERIC = "generic"
ROLES = (PERSONALIZED, GENERIC)


@dataclass(frozen=True)
class RoleMap:
    """A role for every layer, with the scores and the rule that decided it."""

    layers: tuple[str, ...]
    scores: tuple[float, ...]
    rule: str
    threshold: float
    roles: dict[str, str]

    def personalized(self) -> list[str]:
        return [layer for layer in self.layers if self.roles[layer] == PERSONALIZED]

    def generic(self) -> list[str]:
        return [layer for layer in self.layers if self.roles[layer] == GENERIC]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "scores": [float(score) for score in self.scores],
            "rule": self.rule,
            "threshold": float(self.threshold),
            "roles": {layer: self.roles[layer] for layer in self.layers},
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> RoleMap:
        try:
            layers = tuple(str(layer) for layer in payload["layers"])
            scores = tuple(float(score) for score in payload["scores"])
            roles = {str(layer): str(role) for layer, role in payload["roles"].items()}
            rule, threshold = str(payload["rule"]), float(payload["threshold"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FedheiError(f"not a role map ({type(error).__name__}: {error}); "
                              "expected layers, scores, rule, threshold and roles") from error
        if len(scores) != len(layers) or set(roles) != set(layers) or not set(roles.values()) <= set(ROLES):
            raise FedheiError("inconsistent role map: every layer needs one score and one role "
                              f"({' or '.join(ROLES)})")
        return cls(layers, scores, rule, threshold, {layer: roles[layer] for layer in layers})


def normalized(scores: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] relative to the largest; a negative sensitivity (the perturbation
    helped) counts as none."""
    clipped = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64)), 0.0, None)
    peak = clipped.max(initial=0.0)
    return clipped / peak if peak > 0 else clipped


def _absolute(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Min-max normalized score >= threshold: 0 is the least sensitive layer, 1 the most."""
    clipped = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64)), 0.0, None)
    spread = clipped.max(initial=0.0) - clipped.min(initial=0.0)
    if spread == 0:
        return np.zeros(len(clipped), dtype=bool)
    return (clipped - clipped.min()) / spread >= threshold


def _relative(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Score >= threshold times the largest score; nothing is sensitive if nothing moved."""
    share = normalized(scores)
    return (share >= threshold) & (share > 0)


def _top_fraction(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The ceil(threshold * L) highest scores; ties go to the earlier layer, so it is deterministic."""
    count = min(len(scores), math.ceil(threshold * len(scores) - 1e-9))
    order = np.argsort(-np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf), kind="stable")
    chosen = np.zeros(len(scores), dtype=bool)
    chosen[order[:count]] = True
    return chosen


RULES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "absolute": _absolute,
    "relative": _relative,
    "top-fraction": _top_fraction,
}


def _role_map(layers: Sequence[str], scores: Sequence[float], rule: str, threshold: float, chosen: np.ndarray) -> RoleMap:
    roles = {layer: PERSONALIZED if flag else GENERIC for layer, flag in zip(layers, chosen, strict=True)}
    return RoleMap(tuple(layers), tuple(float(score) for score in scores), rule, float(threshold), roles)


def classify(scores: LayerScores, rule: str, threshold: float) -> RoleMap:
    """Split layers by ``rule``: sensitive layers are personalized, the rest generic."""
    if rule not in RULES:
        raise FedheiError(f"unknown role rule '{rule}'; choose one of: {', '.join(RULES)}")
    if not 0 <= threshold <= 1:
        raise FedheiError(f"role threshold is {threshold}; it must be in [0, 1]")
    chosen = RULES[rule](np.asarray(scores.scores), threshold)
    return _role_map(scores.layers, scores.scores, rule, threshold, chosen)


def random_roles(layers: Sequence[str], personalized_count: int, seed: int) -> RoleMap:
    """``personalized_count`` layers drawn at random: does measuring beat guessing?"""
    if not 0 <= personalized_count <= len(layers):
        raise FedheiError(f"cannot personalize {personalized_count} of {len(layers)} layers")
    chosen = np.zeros(len(layers), dtype=bool)
    chosen[seeding.rng(seed, "random-roles").choice(len(layers), size=personalized_count, replace=False)] = True
    return _role_map(layers, [0.0] * len(layers), "random", personalized_count / max(1, len(layers)), chosen)


def uniform_roles(layers: Sequence[str]) -> RoleMap:
    """Every layer generic: uniform pruning with no roles at all."""
    return _role_map(layers, [0.0] * len(layers), "uniform", 0.0, np.zeros(len(layers), dtype=bool))


def agreement(ours: RoleMap, reference: RoleMap) -> float:
    """Fraction of the reference's layers that ``ours`` gives the same role."""
    return float(np.mean([ours.roles[layer] == reference.roles[layer] for layer in reference.layers]))

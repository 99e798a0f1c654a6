"""Pruning by layer role: per-layer ratios, magnitude masks and step buffering.

Pruners take per-layer ratios, not roles or scores: :func:`layer_ratios` is the one
place where roles become ratios, so any role map (HEI, random, uniform) works with
any pruner (these masks, or :mod:`fedhei.method.structured`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from fedhei.errors import FedheiError
from fedhei.method.roles import PERSONALIZED, RoleMap
from fedhei.models.registry import linear_layers
from fedhei.training.loops import apply_masks

Masks = dict[str, torch.Tensor]



def layer_ratios(roles: RoleMap, prob: float, personal_factor: float) -> dict[str, float]:
    """``prob`` for generic layers, ``prob * personal_factor`` for personalized ones (a scenario's checked settings)."""
    return {layer: prob * personal_factor if roles.roles[layer] == PERSONALIZED else prob for layer in roles.layers}


def cubic_ratio(target: float, step: int, steps: int) -> float:
    """Zhu and Gupta's (2017) cubic schedule: prune fast while much is redundant, slowly near the end."""
    if steps < 1 or not 0 <= step <= steps:
        raise FedheiError(f"pruning step {step} of {steps}: steps must be >= 1 and 0 <= step <= steps")
    return target * (1.0 - (1.0 - step / steps) ** 3)


def modules_named(model: nn.Module, names: Mapping[str, float]) -> dict[str, nn.Linear]:
    modules = dict(model.named_modules())
    unknown = [name for name in names if not isinstance(modules.get(name), nn.Linear)]
    if unknown:
        raise FedheiError(f"not linear layers of this model: {', '.join(unknown[:5])}")
    bad = {name: ratio for name, ratio in names.items() if not 0 <= ratio <= 1}
    if bad:
        raise FedheiError(f"pruning ratios must be in [0, 1]; got {bad}")
    return {name: modules[name] for name in names}


def magnitude_masks(model: nn.Module, ratios: Mapping[str, float]) -> Masks:
    """Per layer, prune exactly round(ratio * n) of the smallest-magnitude weights.

    Ties go to the lower index (a stable sort), so masks are deterministic, and
    since pruned weights are zeros they sort first: masks nest as ratios grow.
    Biases are never pruned.
    """
    masks: Masks = {}
    for name, module in modules_named(model, ratios).items():
        weight = module.weight.detach()
        count = math.floor(ratios[name] * weight.numel() + 0.5)
        keep = _keep_all_but_smallest(weight.abs().flatten().cpu(), count)
        masks[f"{name}.weight"] = keep.view_as(weight).to(weight.device)
    return masks


def _keep_all_but_smallest(magnitudes: torch.Tensor, count: int) -> torch.Tensor:
    """False at the ``count`` smallest values, ties to the lower index: a stable sort's first ``count``.

    Selecting the count-th value and splitting its ties by index gives the same mask as
    sorting everything, several times faster (each client builds masks every round). NaN
    has no place in that selection, so a tensor holding one is sorted as before.
    """
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
    if count == 0:
        return keep
    if torch.isnan(magnitudes).any():
        keep[torch.sort(magnitudes, stable=True).indices[:count]] = False
        return keep
    threshold = torch.kthvalue(magnitudes, count).values
    keep = magnitudes > threshold
    ties = torch.nonzero(magnitudes == threshold).flatten()
    keep[ties[count - int((magnitudes < threshold).sum()):]] = True
    return keep


def compression(
    model: nn.Module, masks: Mapping[str, torch.Tensor], base: nn.Module | None = None
) -> dict[str, float]:
    """Parameters kept and removed, over all parameters and over the linear layers.

    ``base`` is the unpruned model a structurally pruned ``model`` was cut from:
    totals are counted on it, so removed channels count as removed.
    """
    reference = base if base is not None else model
    masked_out = {name: int((~mask.bool()).sum().item()) for name, mask in masks.items()}
    kept_all = sum(param.numel() for param in model.parameters()) - sum(masked_out.values())
    total_all = sum(param.numel() for param in reference.parameters())
    linear_total = _linear_param_count(reference, {})
    linear_kept = _linear_param_count(model, masked_out)
    return {
        "params-total": float(total_all),
        "params-kept": float(kept_all),
        "linear-total": float(linear_total),
        "linear-kept": float(linear_kept),
        "compression": 1.0 - kept_all / total_all,
        "linear-compression": 1.0 - linear_kept / linear_total,
    }


def _linear_param_count(model: nn.Module, removed: Mapping[str, int]) -> int:
    """Weights and biases of the linear layers, less those ``removed`` names."""
    params = dict(model.named_parameters())
    names = [f"{layer.name}.{kind}" for layer in linear_layers(model) for kind in ("weight", "bias")]
    return sum(params[name].numel() - removed.get(name, 0) for name in names if name in params)


def prune_with_schedule(
    model: nn.Module, ratios: Mapping[str, float], steps: int, finetune: Callable[[Masks], None]
) -> Masks:
    """Step buffering: reach ``ratios`` over ``steps`` cubic steps, fine-tuning after each.

    ``finetune(masks)`` must keep pruned weights at zero (``fedhei.training.loops.train`` does,
    given the masks). ``steps=1`` is one-shot pruning.
    """
    masks: Masks = {}
    for step in range(1, steps + 1):
        masks = magnitude_masks(model, {name: cubic_ratio(ratio, step, steps) for name, ratio in ratios.items()})
        apply_masks(model, masks)
        finetune(masks)
    return masks



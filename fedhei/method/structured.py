"""Structured pruning: whole attention heads and MLP channels removed, so tensors,
files and compute really shrink. Its safetensors format lives with the other
checkpoints (:func:`fedhei.models.checkpoints.save_structured`), whose loader reads it.

How it cuts: by slicing the Linear layers along the groups the model's adapter
describes (:mod:`fedhei.models.adapters`: an attention unit spans q, k, v and the
output projection, with grouped-query attention's key/value heads kept whole; an MLP
channel spans fc1 or gate and up, and fc2 or down), with Torch-Pruning's
``prune_linear_out_channels`` / ``prune_linear_in_channels`` doing the tensor surgery.
Torch-Pruning's dependency graph is not used: tracing a two-layer Qwen2 with it had
not finished after five minutes on this machine, and the groups are known exactly
from the architecture. On timm's ViT the slicing removes the same heads and channels
as the dependency graph did with its default importance (a test checks this).

The unit importance is a parameter (as in Torch-Pruning: a group in, one score per
unit out), so any importance works with this pruner.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from fedhei.method.pruning import cubic_ratio, modules_named
from fedhei.models.adapters import StructuredGroup, adapter_for

# A group of the model in, one score per unit (head group or channel) out; low scores go first.
Importance = Callable[[nn.Module, StructuredGroup], torch.Tensor]


def group_magnitude(model: nn.Module, group: StructuredGroup) -> torch.Tensor:
    """Squared L2 norm of every weight a unit owns (Torch-Pruning's group magnitude, p=2).

    Summed over all the unit's slices, so its ranking is that of Torch-Pruning's
    ``GroupMagnitudeImportance(p=2)`` averaged over a head's channels.
    """
    modules = dict(model.named_modules())
    scores = torch.zeros(group.units, dtype=torch.float64)
    for unit in range(group.units):
        for part in group.unit_slices(unit):
            weight = modules[part.layer].weight.detach()
            chosen = weight.index_select(part.axis, torch.tensor(part.indices, device=weight.device))
            scores[unit] += chosen.double().pow(2).sum().item()
    return scores


def structured_widths(model: nn.Module) -> dict[str, int]:
    """What structured pruning removes units of, keyed by each group's first layer:
    attention units (heads, or key/value head groups) per query layer, hidden channels per MLP input layer."""
    return {group.key_name: group.units for group in adapter_for(model).structured_groups(model)}


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.sort(scores.detach().float().cpu(), stable=True).indices[:count].tolist())


def _remove_units(model: nn.Module, group: StructuredGroup, units: list[int]) -> None:
    import torch_pruning as tp

    modules = dict(model.named_modules())
    cut: dict[tuple[str, int], list[int]] = {}
    for unit in units:
        for part in group.unit_slices(unit):
            cut.setdefault((part.layer, part.axis), []).extend(part.indices)
    for (layer, axis), indices in cut.items():
        prune = tp.prune_linear_out_channels if axis == 0 else tp.prune_linear_in_channels
        prune(modules[layer], sorted(indices))


def structured_prune(
    model: nn.Module,
    ratios: Mapping[str, float],
    importance: Importance | None = None,
    widths: Mapping[str, int] | None = None,
) -> nn.Module:
    """A copy of ``model`` with whole attention units and MLP hidden channels removed.

    A unit spans several layers (q, k, v and the output projection; or the MLP's
    input and output layers); each group is pruned at the lowest of its layers'
    ratios, so a personalized layer is never cut harder than its role allows. The
    embedding width and the head stay intact, so the model keeps its interface.
    ``widths`` (from :func:`structured_widths`) are the counts the ratios refer to, by
    default the model's own: step buffering passes the original widths so that each
    step's ratio is of the unpruned model. Units go in order of ``importance``
    (:func:`group_magnitude` by default); at least one unit of every group stays.
    """
    modules_named(model, ratios)
    pruned = copy.deepcopy(model).eval()
    adapter = adapter_for(pruned)
    widths = dict(widths or structured_widths(pruned))
    importance = importance or group_magnitude
    for group in adapter.structured_groups(pruned):
        ratio = min(ratios.get(layer, 0.0) for layer in group.layers)
        width = widths[group.key_name]
        keep = max(1, width - math.floor(ratio * width + 0.5))
        if keep < group.units:
            _remove_units(pruned, group, _lowest(importance(pruned, group), group.units - keep))
    adapter.sync_structure(pruned)
    return pruned


def structured_with_schedule(
    model: nn.Module,
    ratios: Mapping[str, float],
    steps: int,
    finetune: Callable[[nn.Module], None],
    importance: Importance | None = None,
) -> nn.Module:
    """Step buffering for structured pruning: the cubic schedule over the original widths."""
    widths = structured_widths(model)
    current = model
    for step in range(1, steps + 1):
        step_ratios = {name: cubic_ratio(ratio, step, steps) for name, ratio in ratios.items()}
        current = structured_prune(current, step_ratios, importance=importance, widths=widths)
        finetune(current)
    return current

"""Structured pruning with Torch-Pruning: whole attention heads and MLP channels
removed, so tensors, files and compute really shrink; and its safetensors format.

The channel importance is a parameter (Torch-Pruning's interface: a dependency
group in, one score per channel out), so any importance works with this pruner.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedhei.errors import FedheiError
from fedhei.method.pruning import cubic_ratio, modules_named
from fedhei.models.checkpoints import load_state
from fedhei.models.registry import create_model, input_size, linear_layers
from fedhei.models.safetensors_file import write_safetensors

# Torch-Pruning's importance interface: a dependency group in, one score per channel out.
Importance = Callable[[Any], torch.Tensor]

STRUCTURE_KEY = "fedhei-structure"


def _blocks(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(block, "attn") and hasattr(block, "mlp") for block in blocks):
        raise FedheiError(f"structured pruning needs a timm VisionTransformer; got {type(model).__name__}")
    return list(blocks)


def _block_layer_names(model: nn.Module) -> list[dict[str, str]]:
    """Per block, the names of its qkv, proj, fc1 and fc2 layers."""
    index = {id(module): name for name, module in model.named_modules()}
    return [
        {
            "qkv": index[id(block.attn.qkv)],
            "proj": index[id(block.attn.proj)],
            "fc1": index[id(block.mlp.fc1)],
            "fc2": index[id(block.mlp.fc2)],
        }
        for block in _blocks(model)
    ]


def structured_widths(model: nn.Module) -> dict[str, int]:
    """What structured pruning removes units of: heads per qkv layer, hidden channels per fc1 layer."""
    widths = {}
    for block, names in zip(_blocks(model), _block_layer_names(model), strict=True):
        widths[names["qkv"]] = int(block.attn.num_heads)
        widths[names["fc1"]] = int(block.mlp.fc1.out_features)
    return widths


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.sort(scores.detach().float().cpu(), stable=True).indices[:count].tolist())


def structured_prune(
    model: nn.Module,
    ratios: Mapping[str, float],
    importance: Importance | None = None,
    widths: Mapping[str, int] | None = None,
) -> nn.Module:
    """A copy of ``model`` with whole attention heads and MLP hidden channels removed.

    A head spans qkv and proj, a hidden channel spans fc1 and fc2; each is pruned at
    the lower of its two layers' ratios, so a personalized layer is never cut harder
    than its role allows. The embedding width and the classifier stay intact, so the
    model keeps its interface. ``widths`` (from :func:`structured_widths`) are the
    counts the ratios refer to, by default the model's own: step buffering passes the
    original widths so that each step's ratio is of the unpruned model. Channels go
    in order of ``importance`` (Torch-Pruning's group L2 magnitude by default).
    """
    import torch_pruning as tp

    modules_named(model, ratios)
    pruned = copy.deepcopy(model).eval()
    widths = dict(widths or structured_widths(pruned))
    importance = importance or tp.importance.GroupMagnitudeImportance(p=2)
    device = next(pruned.parameters()).device
    example = torch.zeros(1, 3, input_size(pruned), input_size(pruned), device=device)
    unwrapped = [(param, param.dim() - 1) for name, param in pruned.named_parameters() if name in ("cls_token", "pos_embed")]
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example, unwrapped_parameters=unwrapped)
    for block, names in zip(_blocks(pruned), _block_layer_names(pruned), strict=True):
        attn, mlp = block.attn, block.mlp
        head_ratio = min(ratios.get(names["qkv"], 0.0), ratios.get(names["proj"], 0.0))
        keep_heads = max(1, widths[names["qkv"]] - math.floor(head_ratio * widths[names["qkv"]] + 0.5))
        if keep_heads < attn.num_heads:
            channels = list(range(attn.proj.in_features))
            scores = importance(graph.get_pruning_group(attn.proj, tp.prune_linear_in_channels, channels))
            heads = _lowest(scores.view(attn.num_heads, attn.head_dim).mean(dim=1), attn.num_heads - keep_heads)
            drop = [head * attn.head_dim + offset for head in heads for offset in range(attn.head_dim)]
            graph.get_pruning_group(attn.proj, tp.prune_linear_in_channels, drop).prune()
            attn.num_heads = keep_heads
            attn.attn_dim = keep_heads * attn.head_dim
        mlp_ratio = min(ratios.get(names["fc1"], 0.0), ratios.get(names["fc2"], 0.0))
        keep_hidden = max(1, widths[names["fc1"]] - math.floor(mlp_ratio * widths[names["fc1"]] + 0.5))
        if keep_hidden < mlp.fc1.out_features:
            channels = list(range(mlp.fc1.out_features))
            scores = importance(graph.get_pruning_group(mlp.fc1, tp.prune_linear_out_channels, channels))
            drop = _lowest(scores, mlp.fc1.out_features - keep_hidden)
            graph.get_pruning_group(mlp.fc1, tp.prune_linear_out_channels, drop).prune()
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


def structure(model: nn.Module) -> dict[str, Any]:
    """The shapes that make a structurally pruned model differ from its base."""
    return {
        "layers": {layer.name: [layer.out_features, layer.in_features] for layer in linear_layers(model)},
        "blocks": [{"num_heads": int(block.attn.num_heads), "head_dim": int(block.attn.head_dim)} for block in _blocks(model)],
    }


def save_structured(model: nn.Module, path: Path | str, metadata: Mapping[str, str]) -> None:
    """Safetensors (atomic, no pickle) with the shrunk shapes as JSON in the metadata.

    ``metadata["model"]`` names the base model, which :func:`load_structured` rebuilds
    and then cuts to the recorded shapes.
    """
    if not metadata.get("model"):
        raise FedheiError("save_structured needs metadata['model'], the base model's name, to load the file back")
    write_safetensors(path, model.state_dict(), {**metadata, STRUCTURE_KEY: json.dumps(structure(model))})


def load_structured(path: Path | str) -> nn.Module:
    """Rebuild a structurally pruned model from :func:`save_structured`'s file."""
    state, metadata = load_state(path)
    if STRUCTURE_KEY not in metadata or "model" not in metadata:
        raise FedheiError(f"{path} is not a structurally pruned model (no {STRUCTURE_KEY} or model in its metadata)")
    try:
        shapes = json.loads(metadata[STRUCTURE_KEY])
        model = create_model(metadata["model"])
        modules = dict(model.named_modules())
        for name, (out_features, in_features) in shapes["layers"].items():
            parent_name, _, child = name.rpartition(".")
            has_bias = f"{name}.bias" in state
            setattr(modules[parent_name] if parent_name else model, child, nn.Linear(in_features, out_features, bias=has_bias))
        for block, spec in zip(_blocks(model), shapes["blocks"], strict=True):
            block.attn.num_heads = int(spec["num_heads"])
            block.attn.head_dim = int(spec["head_dim"])
            block.attn.attn_dim = block.attn.num_heads * block.attn.head_dim
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise FedheiError(f"{path} does not describe a loadable pruned model: {str(error).splitlines()[0]}") from error
    return model.eval()

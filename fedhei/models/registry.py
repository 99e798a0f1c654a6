"""Named ViT configurations, the linear-layer inventory, and safetensors checkpoints.

The CIFAR-sized configurations are registered in timm's own model registry, so
``timm.create_model("vit_tiny_c10")`` works as well as fedhei's hyphenated names,
and every model, ours or timm's, answers the same interface (a timm
``VisionTransformer``). timm's ImageNet ViTs are accepted by name for GPU runs;
their input is resized to 224.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fedhei.data.cifar10 import NUM_CLASSES
from fedhei.errors import FedheiError

_CIFAR_CONFIGS: dict[str, dict[str, Any]] = {
    # ~0.14M parameters: unit tests and the synthetic set.
    "vit_micro_c10": dict(patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    # ~1.2M parameters, 16 tokens: the CPU default.
    "vit_tiny_c10": dict(patch_size=8, embed_dim=128, depth=6, num_heads=4, mlp_ratio=4.0),
    # ~1.8M parameters, 64 tokens: more accurate, about 4x the compute of vit-tiny-c10.
    "vit_small_c10": dict(patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=2.0),
}

_FACTORY_ONLY_KWARGS = frozenset({"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"})

# fedhei's names for the CIFAR configurations; timm's ImageNet names are used as they are.
ALIASES = {"vit-micro": "vit_micro_c10", "vit-tiny-c10": "vit_tiny_c10", "vit-small-c10": "vit_small_c10"}
HUB_MODELS = ("vit_tiny_patch16_224", "deit_tiny_patch16_224", "vit_small_patch16_224", "deit_small_patch16_224")


def _cifar_vit(config_name: str, pretrained: bool, **overrides: Any) -> VisionTransformer:
    if pretrained:
        raise FedheiError(f"{config_name} has no hub weights; pre-train it with `fedhei pretrain`")
    kwargs: dict[str, Any] = dict(img_size=32, num_classes=NUM_CLASSES, **_CIFAR_CONFIGS[config_name])
    # timm's factory passes hub bookkeeping that a locally defined config has no use for.
    kwargs.update({key: value for key, value in overrides.items() if key not in _FACTORY_ONLY_KWARGS})
    return VisionTransformer(**kwargs)


@register_model
def vit_micro_c10(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    return _cifar_vit("vit_micro_c10", pretrained, **kwargs)


@register_model
def vit_tiny_c10(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    return _cifar_vit("vit_tiny_c10", pretrained, **kwargs)


@register_model
def vit_small_c10(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    return _cifar_vit("vit_small_c10", pretrained, **kwargs)


def available_models() -> list[str]:
    return [*ALIASES, *HUB_MODELS]


def resolve_model_name(name: str) -> str:
    """fedhei or timm name -> timm registry name; unknown names are a user error."""
    if name in ALIASES:
        return ALIASES[name]
    if name in ALIASES.values() or name in HUB_MODELS:
        return name
    raise FedheiError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")


def create_model(name: str, pretrained: bool = False, num_classes: int = NUM_CLASSES) -> VisionTransformer:
    """Build a named model; ``pretrained`` fetches hub weights, which needs internet access."""
    timm_name = resolve_model_name(name)
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise FedheiError(f"cannot fetch hub weights for {timm_name} ({type(error).__name__}); "
                          "this needs internet access: give a local base-model checkpoint instead") from error
    assert isinstance(model, VisionTransformer), f"{timm_name} is not a ViT"
    return model


def input_size(model: nn.Module) -> int:
    """Side length of the square images the model expects (32 for ours, 224 for timm's)."""
    size = model.patch_embed.img_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


@dataclass(frozen=True)
class LinearLayer:
    """One prunable unit: a linear layer of the model."""

    name: str
    out_features: int
    in_features: int
    params: int
    # Block index, or -1 for layers outside the blocks (the head), from timm's naming.
    block: int
    # qkv, proj, fc1, fc2 or head: the same role in every block.
    kind: str


def linear_layers(model: nn.Module) -> list[LinearLayer]:
    """The model's linear layers in forward order: the units that layer roles and pruning act on."""
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            parts = name.split(".")
            block = int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else -1
            params = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
            layers.append(LinearLayer(name, module.out_features, module.in_features, params, block, parts[-1]))
    return layers


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) parameter counts; pruned weights are zeros, so nonzero is what survives."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p).item()) for p in model.parameters())
    return total, nonzero

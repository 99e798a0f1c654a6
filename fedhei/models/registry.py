"""Named models and the linear-layer inventory.

Vision models: the CIFAR-sized ViT configurations are registered in timm's own
model registry, so ``timm.create_model("vit_tiny_c10")`` works as well as
fedhei's hyphenated names, and every one, ours or timm's, is a timm
``VisionTransformer``. timm's ImageNet ViTs are accepted by name for GPU runs;
their input is resized to 224. Language models: transformers' Qwen2, from a small
named configuration or a local checkpoint folder (:mod:`fedhei.models.language`).
What layer roles and pruning need to know of a model comes from its adapter
(:mod:`fedhei.models.adapters`), not from names hard-coded here.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fedhei import seeding
from fedhei.data.cifar10 import NUM_CLASSES
from fedhei.errors import FedheiError
from fedhei.models import language
from fedhei.models.adapters import LinearLayer, adapter_for
from fedhei.models.tasks import CLASSIFICATION, LANGUAGE_MODELING

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
    return [*ALIASES, *HUB_MODELS, *language.SMALL_CONFIGS]


def resolve_model_name(name: str) -> str:
    """fedhei or timm name -> registry name; a Qwen2 checkpoint folder is its own name; anything else
    is a user error."""
    if name in ALIASES:
        return ALIASES[name]
    if name in ALIASES.values() or name in HUB_MODELS or name in language.SMALL_CONFIGS:
        return name
    if language.is_checkpoint_folder(name):
        language.qwen2_config(name)
        return name
    raise FedheiError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}, "
                      "or a Qwen2 checkpoint folder (config.json and *.safetensors)")


def task_name(name: str) -> str:
    """The task a model name stands for, known without building the model (for parse-time checks)."""
    return LANGUAGE_MODELING.name if language.is_language_model(resolve_model_name(name)) else CLASSIFICATION.name


def create_model(name: str, pretrained: bool = False, num_classes: int = NUM_CLASSES, seed: int = 0) -> nn.Module:
    """Build a named model with weights drawn on the ``seed``'s "model-init" stream.

    ``pretrained`` fetches timm hub weights, which needs internet access; language models
    take their weights from a local checkpoint instead (``load_checkpoint``).
    """
    registry_name = resolve_model_name(name)
    if language.is_language_model(registry_name):
        if pretrained:
            raise FedheiError(f"{name} has no hub weights in fedhei; give a local checkpoint folder as base-model")
        return language.create_language_model(registry_name, seed)
    try:
        with seeding.torch_seeded(seed, "model-init"):
            model = timm.create_model(registry_name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise FedheiError(f"cannot fetch hub weights for {registry_name} ({type(error).__name__}); "
                          "this needs internet access: give a local base-model checkpoint instead") from error
    assert isinstance(model, VisionTransformer), f"{registry_name} is not a ViT"
    return model


def input_size(model: nn.Module) -> int:
    """Side length of the square images the model expects (32 for ours, 224 for timm's)."""
    size = model.patch_embed.img_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def linear_layers(model: nn.Module) -> list[LinearLayer]:
    """The model's linear layers in forward order: the units that layer roles and pruning act on."""
    return adapter_for(model).linear_layers(model)


def head_parameter_names(name: str) -> tuple[str, ...]:
    """A named model's head parameters, from its adapter, without allocating its weights
    (the server splits what it sends at the head and holds no model)."""
    with torch.device("meta"):
        model = create_model(name)
    return adapter_for(model).head_parameters(model)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, nonzero) parameter counts; pruned weights are zeros, so nonzero is what survives."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p).item()) for p in model.parameters())
    return total, nonzero

"""Ratios, masks, step buffering and the structured pruner."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_settings
from torch import nn

from fedhei.data.cifar10 import make_synthetic
from fedhei.errors import FedheiError
from fedhei.method.pruning import compression, cubic_ratio, layer_ratios, magnitude_masks, prune_with_schedule
from fedhei.method.roles import RoleMap, random_roles, uniform_roles
from fedhei.method.structured import structured_prune, structured_widths, structured_with_schedule
from fedhei.models.adapters import StructuredGroup
from fedhei.models.checkpoints import load_structured, save_checkpoint, save_structured
from fedhei.models.registry import count_parameters, create_model, linear_layers
from fedhei.training.loops import batches_for, train


@pytest.fixture()
def micro() -> nn.Module:
    torch.manual_seed(0)
    return create_model("vit-micro").eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def names(model: nn.Module) -> list[str]:
    return [layer.name for layer in linear_layers(model)]


def pruned_fraction(model: nn.Module, masks: dict[str, torch.Tensor], layer: str) -> float:
    return float((~masks[f"{layer}.weight"]).sum()) / dict(model.named_modules())[layer].weight.numel()


def test_layer_ratios_follow_roles(micro: nn.Module) -> None:
    roles = random_roles(names(micro), 5, seed=0)
    ratios = layer_ratios(roles, 0.6, personal_factor=0.5)
    assert {ratios[layer] for layer in roles.personalized()} == {0.3}
    assert {ratios[layer] for layer in roles.generic()} == {0.6}
    assert set(layer_ratios(uniform_roles(names(micro)), 0.4, personal_factor=0.5).values()) == {0.4}


def test_cubic_schedule() -> None:
    assert cubic_ratio(0.5, 0, 4) == 0.0
    assert cubic_ratio(0.5, 4, 4) == 0.5
    assert cubic_ratio(0.7, 1, 1) == 0.7
    steps = [cubic_ratio(0.5, step, 5) for step in range(6)]
    gains = np.diff(steps)
    assert (gains > 0).all() and (np.diff(gains) < 0).all()
    with pytest.raises(FedheiError):
        cubic_ratio(0.5, 3, 2)


def test_masks_prune_each_layer_to_its_ratio_by_magnitude(micro: nn.Module) -> None:
    layers = names(micro)
    ratios = {layer: 0.1 + 0.8 * index / len(layers) for index, layer in enumerate(layers)}
    masks = magnitude_masks(micro, ratios)
    modules = dict(micro.named_modules())
    for layer, ratio in ratios.items():
        weight = modules[layer].weight.detach()
        mask = masks[f"{layer}.weight"]
        assert abs(int((~mask).sum()) - ratio * weight.numel()) <= 1
        assert weight[~mask].abs().max() <= weight[mask].abs().min()
    assert not any(name.endswith(".bias") for name in masks)


def test_masks_nest_as_ratios_grow(micro: nn.Module) -> None:
    layers = names(micro)
    small = magnitude_masks(micro, dict.fromkeys(layers, 0.3))
    with torch.no_grad():
        for name, param in micro.named_parameters():
            if name in small:
                param.mul_(small[name])
    large = magnitude_masks(micro, dict.fromkeys(layers, 0.6))
    for name in small:
        assert not (large[name] & ~small[name]).any()


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_masks_prune_what_a_stable_sort_puts_first_ties_and_nan_included(micro: nn.Module, ratio: float) -> None:
    """Masks are selected, not sorted; the selection must prune exactly the weights a stable sort of the
    magnitudes puts first (ties to the lower index: rounded weights, zeros from earlier steps, a NaN)."""
    layers = names(micro)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            weight = dict(micro.named_modules())[layer].weight
            weight.copy_(weight.round(decimals=1) * (torch.rand(weight.shape, generator=generator) > 0.3))
            if index == 0:
                weight.view(-1)[5] = float("nan")
    masks = magnitude_masks(micro, dict.fromkeys(layers, ratio))
    for layer in layers:
        weight = dict(micro.named_modules())[layer].weight.detach()
        count = math.floor(ratio * weight.numel() + 0.5)
        expected = torch.ones(weight.numel(), dtype=torch.bool)
        expected[torch.sort(weight.abs().flatten(), stable=True).indices[:count]] = False
        assert torch.equal(masks[f"{layer}.weight"].flatten(), expected)


def test_masks_hold_through_training(micro: nn.Module) -> None:
    data = make_synthetic(num_train=256, num_test=16)
    masks = magnitude_masks(micro, dict.fromkeys(names(micro), 0.5))
    before = {name: param.detach().clone() for name, param in micro.named_parameters()}
    train(micro, batches_for(micro, data.train), train_settings(epochs=1, batch_size=64, lr=1e-3), masks=masks)
    params = dict(micro.named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all()
        assert not torch.equal(params[name][mask], before[name][mask])


def test_step_buffering_reaches_the_target(micro: nn.Module) -> None:
    layers = names(micro)
    targets = {layer: (0.7 if "fc" in layer else 0.35) for layer in layers}
    seen: list[float] = []

    def finetune(masks: dict[str, torch.Tensor]) -> None:
        seen.append(pruned_fraction(micro, masks, "blocks.0.mlp.fc1"))
        with torch.no_grad():  # stand-in for training: move every weight, pruned or not
            for param in micro.parameters():
                param.add_(0.01)

    masks = prune_with_schedule(micro, targets, steps=3, finetune=finetune)
    assert len(seen) == 3
    assert seen == sorted(seen) and seen[0] < 0.7
    for layer, target in targets.items():
        assert pruned_fraction(micro, masks, layer) == pytest.approx(target, abs=1.5 / dict(micro.named_modules())[layer].weight.numel())
    one_shot = prune_with_schedule(copy.deepcopy(micro), targets, steps=1, finetune=lambda masks: None)
    assert all(int((~one_shot[name]).sum()) == int((~masks[name]).sum()) for name in masks)


def test_compression_counts(micro: nn.Module) -> None:
    total = sum(param.numel() for param in micro.parameters())
    assert compression(micro, {})["compression"] == 0.0
    masks = magnitude_masks(micro, dict.fromkeys(names(micro), 0.5))
    figures = compression(micro, masks)
    removed = sum(int((~mask).sum()) for mask in masks.values())
    assert figures["params-total"] == total
    assert figures["params-kept"] == total - removed
    assert figures["compression"] == pytest.approx(removed / total)
    weights = sum(layer.out_features * layer.in_features for layer in linear_layers(micro))
    linear = sum(layer.params for layer in linear_layers(micro))
    assert figures["linear-total"] == linear
    assert figures["linear-compression"] == pytest.approx(0.5 * weights / linear, abs=1e-3)


def test_unknown_layer_is_a_user_error(micro: nn.Module) -> None:
    with pytest.raises(FedheiError, match="not linear layers"):
        magnitude_masks(micro, {"blocks.0.norm1": 0.5})
    with pytest.raises(FedheiError, match=r"\[0, 1\]"):
        magnitude_masks(micro, {"head": 1.5})


def test_structured_pruning_shrinks_and_reloads(micro: nn.Module, images: torch.Tensor, tmp_path: Path) -> None:
    pruned = structured_prune(micro, dict.fromkeys(names(micro), 0.5))
    assert count_parameters(pruned)[0] < 0.6 * count_parameters(micro)[0]
    assert all(block.attn.num_heads == 2 and block.mlp.fc1.out_features == 64 for block in pruned.blocks)
    assert pruned.head.weight.shape == micro.head.weight.shape and pruned.embed_dim == micro.embed_dim
    with torch.no_grad():
        outputs = pruned(images)
    assert outputs.shape == (4, 10) and torch.isfinite(outputs).all()
    assert count_parameters(micro)[0] == 142026  # the original is untouched
    path = tmp_path / "pruned.safetensors"
    save_structured(pruned, path, {"model": "vit-micro"})
    dense = tmp_path / "dense.safetensors"
    save_checkpoint(micro, dense, {"model": "vit-micro"})
    assert path.stat().st_size < 0.6 * dense.stat().st_size
    loaded = load_structured(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), outputs, rtol=0, atol=0)


def test_structured_pruning_removes_the_least_important_heads(micro: nn.Module, images: torch.Tensor) -> None:
    """A custom importance that ranks head 1 of block 0 lowest: the pruned model must equal
    the original with that head's q, k, v rows and proj columns zeroed."""
    block = micro.blocks[0].attn
    width, head_dim = block.proj.in_features, block.head_dim

    def importance(model: nn.Module, group: StructuredGroup) -> torch.Tensor:
        scores = torch.arange(group.units, dtype=torch.float32) + 1000.0
        if group.key_name == "blocks.0.attn.qkv":
            scores[1] = 0.0
        return scores

    pruned = structured_prune(micro, {"blocks.0.attn.qkv": 0.25, "blocks.0.attn.proj": 0.25}, importance=importance)
    reference = copy.deepcopy(micro)
    with torch.no_grad():
        attn = reference.blocks[0].attn
        for part in range(3):
            rows = slice(part * width + head_dim, part * width + 2 * head_dim)
            attn.qkv.weight[rows] = 0.0
            attn.qkv.bias[rows] = 0.0
        attn.proj.weight[:, head_dim : 2 * head_dim] = 0.0
        torch.testing.assert_close(pruned(images), reference(images))
    assert pruned.blocks[0].attn.num_heads == 3 and pruned.blocks[1].attn.num_heads == 4


def _pruned_by_dependency_graph(model: nn.Module, ratios: dict[str, float]) -> nn.Module:
    """The ViT pruner fedhei used before the adapters: Torch-Pruning's dependency graph and
    its default group magnitude importance, one proj-input group per block's heads."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    unwrapped = [(param, param.dim() - 1) for name, param in pruned.named_parameters() if name in ("cls_token", "pos_embed")]
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=torch.zeros(1, 3, 32, 32), unwrapped_parameters=unwrapped)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for index, block in enumerate(pruned.blocks):
        attn, mlp, prefix = block.attn, block.mlp, f"blocks.{index}"
        heads = attn.num_heads
        drop_heads = math.floor(min(ratios[f"{prefix}.attn.qkv"], ratios[f"{prefix}.attn.proj"]) * heads + 0.5)
        if 0 < drop_heads < heads:
            group = graph.get_pruning_group(attn.proj, tp.prune_linear_in_channels, list(range(attn.proj.in_features)))
            scores = importance(group).view(heads, attn.head_dim).mean(dim=1)
            chosen = sorted(torch.sort(scores, stable=True).indices[:drop_heads].tolist())
            drop = [head * attn.head_dim + offset for head in chosen for offset in range(attn.head_dim)]
            graph.get_pruning_group(attn.proj, tp.prune_linear_in_channels, drop).prune()
            attn.num_heads, attn.attn_dim = heads - drop_heads, (heads - drop_heads) * attn.head_dim
        hidden = mlp.fc1.out_features
        drop_hidden = math.floor(min(ratios[f"{prefix}.mlp.fc1"], ratios[f"{prefix}.mlp.fc2"]) * hidden + 0.5)
        if 0 < drop_hidden < hidden:
            scores = importance(graph.get_pruning_group(mlp.fc1, tp.prune_linear_out_channels, list(range(hidden))))
            chosen = sorted(torch.sort(scores, stable=True).indices[:drop_hidden].tolist())
            graph.get_pruning_group(mlp.fc1, tp.prune_linear_out_channels, chosen).prune()
    return pruned


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slicing_removes_what_torch_prunings_dependency_graph_removed(seed: int, images: torch.Tensor) -> None:
    model = create_model("vit-micro", seed=seed).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # rows of unequal size, so that the ranking matters
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.from_numpy(rng.uniform(0.2, 2.0, (module.weight.shape[0], 1))).float())
    ratios = {layer: float(rng.choice([0.0, 0.25, 0.5, 0.7])) for layer in names(model)}
    expected, pruned = _pruned_by_dependency_graph(model, ratios).state_dict(), structured_prune(model, ratios).state_dict()
    assert expected.keys() == pruned.keys()
    assert all(torch.equal(expected[key], pruned[key]) for key in expected)
    assert sum(value.numel() for value in pruned.values()) < sum(value.numel() for value in model.state_dict().values())


def test_structured_ratios_protect_personalized_layers(micro: nn.Module) -> None:
    layers = names(micro)
    roles = {layer: ("personalized" if layer in ("blocks.1.attn.proj", "blocks.2.mlp.fc1") else "generic") for layer in layers}
    role_map = RoleMap(tuple(layers), tuple(0.0 for _ in layers), "test", 0.0, roles)
    pruned = structured_prune(micro, layer_ratios(role_map, 0.5, personal_factor=0.5))
    heads = [block.attn.num_heads for block in pruned.blocks]
    hidden = [block.mlp.fc1.out_features for block in pruned.blocks]
    assert heads == [2, 3, 2, 2]  # a head spans qkv and proj: the lower ratio, 0.25, wins
    assert hidden == [64, 64, 96, 64]
    unchanged = structured_prune(micro, dict.fromkeys(layers, 0.0))
    assert count_parameters(unchanged) == count_parameters(micro)


def test_structured_step_buffering_ends_at_the_one_shot_shape(micro: nn.Module) -> None:
    ratios = dict.fromkeys(names(micro), 0.6)
    widths: list[dict[str, int]] = []
    final = structured_with_schedule(micro, ratios, steps=3, finetune=lambda model: widths.append(structured_widths(model)))
    assert len(widths) == 3
    assert widths[0]["blocks.0.mlp.fc1"] > widths[1]["blocks.0.mlp.fc1"] >= widths[2]["blocks.0.mlp.fc1"]
    assert structured_widths(final) == structured_widths(structured_prune(micro, ratios))
    assert structured_widths(final)["blocks.0.mlp.fc1"] == 128 - math.floor(0.6 * 128 + 0.5)


def test_load_structured_rejects_plain_checkpoints(micro: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "dense.safetensors"
    save_checkpoint(micro, path, {"model": "vit-micro"})
    with pytest.raises(FedheiError, match="not a structurally pruned model"):
        load_structured(path)
    with pytest.raises(FedheiError, match="metadata"):
        save_structured(micro, tmp_path / "x.safetensors", {})

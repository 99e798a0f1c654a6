"""Compressed model files: a pruned model stored sparse is smaller by its compression and loads back identical."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fedhei import seeding
from fedhei.config.scenario import Scenario
from fedhei.errors import FedheiError
from fedhei.federation.client_round import ClientJob
from fedhei.federation.export import finalize
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing
from fedhei.method.pruning import compression, magnitude_masks
from fedhei.method.structured import structured_prune
from fedhei.models.checkpoints import SPARSE_KEY, dense_file_bytes, load_checkpoint, read_metadata, save_sparse, save_structured
from fedhei.models.registry import count_parameters, create_model, linear_layers
from fedhei.training.loops import apply_masks

METADATA = {"model": "vit-micro", "client": "3"}
MASK_SHARE = 0.04  # what the masks may cost, as a share of the linear layers' dense bytes


@pytest.fixture(scope="module")
def pruned_and_compression() -> tuple[nn.Module, float]:
    """vit-micro with every linear layer magnitude-pruned at 0.6, pruned weights at zero, and its linear compression."""
    with seeding.torch_seeded(0, "test-sparse-checkpoints"):
        model = create_model("vit-micro").eval()
    masks = magnitude_masks(model, {layer.name: 0.6 for layer in linear_layers(model)})
    apply_masks(model, masks)
    return model, compression(model, masks)["linear-compression"]


@pytest.fixture(scope="module")
def pruned(pruned_and_compression: tuple[nn.Module, float]) -> nn.Module:
    return pruned_and_compression[0]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 32, 32, generator=seeding.torch_generator(0, "test-sparse-checkpoints-images"))


def _bound(model: nn.Module, linear_compression: float, dense_bytes: int) -> float:
    """(1 - c) x W + 4% x W + N + H, which is the dense file less (c - 4%) x W.

    c: the linear compression as the manifest reports it (the fraction of the linear
    layers' weights and biases removed); W: the dense bytes of those weights and biases;
    N: the dense bytes of every other tensor; H: the dense file's own header (its
    tensor table and metadata), which a small model's file cannot fit in the 0.875%
    of W that the masks (1/32 of W at most) leave of the 4%.
    """
    linear = {f"{layer.name}.{kind}" for layer in linear_layers(model) for kind in ("weight", "bias")}
    linear_bytes = sum(4 * value.numel() for name, value in model.state_dict().items() if name in linear)
    return dense_bytes - (linear_compression - MASK_SHARE) * linear_bytes


def test_a_pruned_model_file_is_smaller_by_its_compression_and_loads_back_identical(
    pruned_and_compression: tuple[nn.Module, float], images: torch.Tensor, tmp_path: Path
) -> None:
    pruned, linear_compression = pruned_and_compression
    assert linear_compression == pytest.approx(0.6, abs=0.01)
    path = tmp_path / "model.safetensors"
    save_sparse(pruned, path, METADATA)
    size = path.stat().st_size
    assert size <= _bound(pruned, linear_compression, dense_file_bytes(pruned, METADATA))
    assert size < 0.5 * dense_file_bytes(pruned, METADATA)
    loaded = load_checkpoint(path).eval()
    assert read_metadata(path)["client"] == "3"
    for (name, value), (loaded_name, loaded_value) in zip(pruned.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert name == loaded_name and torch.equal(value, loaded_value)
    with torch.no_grad():
        assert torch.equal(pruned(images), loaded(images))


def test_the_dense_model_stays_dense_and_the_same_size(tmp_path: Path) -> None:
    """A trained model has no zeros to drop (a fresh one does: its biases start at zero)."""
    model = create_model("vit-micro")
    draws = seeding.torch_generator(0, "test-sparse-dense")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(generator=draws)
    save_sparse(model, tmp_path / "model.safetensors", METADATA)
    assert json.loads(read_metadata(tmp_path / "model.safetensors")[SPARSE_KEY]) == {}
    assert (tmp_path / "model.safetensors").stat().st_size == dense_file_bytes(model, {**METADATA, SPARSE_KEY: "{}"})


def test_one_loader_reads_structured_files_too(pruned: nn.Module, images: torch.Tensor, tmp_path: Path) -> None:
    structured = structured_prune(pruned, {layer.name: 0.5 for layer in linear_layers(pruned)})
    save_structured(structured, tmp_path / "structured.safetensors", METADATA)
    loaded = load_checkpoint(tmp_path / "structured.safetensors")
    with torch.no_grad():
        assert torch.equal(structured(images), loaded(images))


def test_the_exported_user_model_is_sparse_and_its_manifest_says_so(tmp_path: Path) -> None:
    scenario = Scenario(data_source="synthetic", model="vit-micro", num_clients=2, dirichlet_alpha=1.0, local_epochs=0.1,
                        batch_size=32, pruning_steps=2, prob=0.6, calibration_batches=1, scorer="magnitude")
    with seeding.torch_seeded(0, "test-sparse-export"):
        base = {name: value.detach().numpy().copy() for name, value in create_model("vit-micro").named_parameters()}
    metrics = finalize(ClientJob(scenario, ClientPolicy(Sharing.GENERIC, Pruning.ROLES), 1, 1), base, None, tmp_path)
    path = tmp_path / "clients" / "1" / "model.safetensors"
    manifest = json.loads((path.parent / "manifest.json").read_text())
    model = load_checkpoint(path)
    metadata = {key: value for key, value in read_metadata(path).items() if key != SPARSE_KEY}
    assert manifest["bytes-on-disk"] == path.stat().st_size == metrics["bytes-on-disk"]
    assert manifest["bytes-dense"] == dense_file_bytes(model, metadata)
    assert manifest["bytes-on-disk"] <= _bound(model, manifest["linear-compression"], manifest["bytes-dense"])
    assert count_parameters(model) == (manifest["params-total"], manifest["params-nonzero"])


def _rewrite(path: Path, change: Callable[[dict[str, torch.Tensor], dict[str, str]], None]) -> Path:
    tensors, metadata = load_file(str(path)), read_metadata(path)
    change(tensors, metadata)
    broken = path.with_name("broken.safetensors")
    save_file(tensors, str(broken), metadata=metadata)
    return broken


QKV = "blocks.0.attn.qkv.weight"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t, m: t.__setitem__(f"{QKV}::values", t[f"{QKV}::values"][:-1]), "values for"),
        (lambda t, m: t.pop(f"{QKV}::mask"), "lacks its ::values or ::mask"),
        (lambda t, m: t.__setitem__(f"{QKV}::mask", t[f"{QKV}::mask"].to(torch.int16)), "expected uint8"),
        (lambda t, m: t.__setitem__(f"{QKV}::mask", t[f"{QKV}::mask"][:-1].contiguous()), "mask is uint8"),
        (lambda t, m: t.__setitem__(QKV, torch.zeros(192, 64)), "both dense and sparse"),
        (lambda t, m: t.__setitem__("blocks.0.norm1.weight::values", torch.zeros(3)), "not declared"),
        (lambda t, m: m.__setitem__(SPARSE_KEY, "{not json"), "consistent sparse"),
        (lambda t, m: m.__setitem__(SPARSE_KEY, json.dumps({QKV: [192, "64"]})), "has shape"),
        (lambda t, m: m.__setitem__(SPARSE_KEY, json.dumps({**json.loads(m[SPARSE_KEY]), QKV: [192, 65]})), "mask is uint8"),
    ],
    ids=["short-values", "no-mask", "mask-dtype", "mask-size", "dense-and-sparse", "undeclared", "bad-json", "bad-shape",
         "wrong-shape"],
)
def test_a_corrupt_or_inconsistent_sparse_file_is_refused_in_one_line(
    pruned: nn.Module, tmp_path: Path, change: Callable[[dict[str, torch.Tensor], dict[str, str]], None], reason: str
) -> None:
    path = tmp_path / "model.safetensors"
    save_sparse(pruned, path, METADATA)
    with pytest.raises(FedheiError, match=reason) as error:
        load_checkpoint(_rewrite(path, change))
    assert "\n" not in str(error.value) and "not a consistent sparse checkpoint" in str(error.value)


def test_a_truncated_file_is_refused_in_one_line(pruned: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_sparse(pruned, path, METADATA)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FedheiError, match="not a readable safetensors") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)

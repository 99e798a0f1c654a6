from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from fedhei.errors import FedheiError
from fedhei.models.checkpoints import load_checkpoint, save_checkpoint
from fedhei.models.registry import count_parameters, create_model, linear_layers


@pytest.mark.parametrize(("name", "low", "high"), [("vit-micro", 0.1e6, 0.2e6), ("vit-tiny-c10", 0.5e6, 3e6)])
def test_named_configurations_have_their_advertised_size(name: str, low: float, high: float) -> None:
    total, _ = count_parameters(create_model(name))
    assert low <= total <= high


def test_cifar_configurations_live_in_timms_registry() -> None:
    model = timm.create_model("vit_micro_c10")
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(FedheiError, match="unknown model 'vit-huge'"):
        create_model("vit-huge")


def test_layer_inventory_lists_every_linear_layer_in_forward_order() -> None:
    model = create_model("vit-micro")
    layers = linear_layers(model)
    assert [layer.kind for layer in layers[:4]] == ["qkv", "proj", "fc1", "fc2"]
    assert layers[-1].name == "head" and layers[-1].block == -1
    assert len(layers) == 4 * 4 + 1
    assert sum(layer.params for layer in layers) == sum(
        m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)
    )


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    model = create_model("vit-micro").eval()
    save_checkpoint(model, tmp_path / "m.safetensors", {"model": "vit-micro"})
    loaded = load_checkpoint(tmp_path / "m.safetensors").eval()
    images = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(images), loaded(images))


def test_corrupt_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(FedheiError, match="not a readable safetensors"):
        load_checkpoint(bad)

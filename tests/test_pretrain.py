from __future__ import annotations

from pathlib import Path

import pytest

from fedhei.data.cifar10 import make_synthetic
from fedhei.errors import FedheiError
from fedhei.models.checkpoints import load_checkpoint
from fedhei.training.pretrain import PretrainSpec, pretrain


def test_pretrain_on_synthetic_beats_chance_and_is_cached(tmp_path: Path) -> None:
    data = make_synthetic()
    spec = PretrainSpec(model="vit-micro", epochs=2, lr=3e-3, all_train=True)
    first = pretrain(data, spec, out=tmp_path / "base.safetensors")
    assert not first.cached
    assert first.test_accuracy > 0.5, f"chance is 0.1; got {first.test_accuracy}"
    second = pretrain(data, spec)
    assert second.cached and second.test_accuracy == pytest.approx(first.test_accuracy, abs=1e-6)
    assert load_checkpoint(tmp_path / "base.safetensors") is not None


def test_pretrain_command_writes_a_loadable_base_model(tmp_path: Path, fedhei_cli) -> None:
    out = tmp_path / "cli.safetensors"
    result = fedhei_cli("pretrain", "--data", "synthetic", "--model", "vit-micro", "--epochs", "0.2",
                        "--public-fraction", "0.5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert load_checkpoint(out).num_classes == 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--model", "vit-huge"], "unknown model"), (["--epochs", "0"], "epochs")],
)
def test_bad_pretrain_input_is_one_line_and_nonzero(arguments: list[str], message: str, expect_one_line_error) -> None:
    expect_one_line_error("pretrain", "--data", "synthetic", *arguments, message=message)


def test_spec_rejects_a_missing_public_slice() -> None:
    with pytest.raises(FedheiError, match="public"):
        PretrainSpec(model="vit-micro", public_fraction=0.0)

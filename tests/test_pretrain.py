from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import make_synthetic
from fedhei.errors import FedheiError
from fedhei.models.checkpoints import load_checkpoint, read_metadata
from fedhei.models.registry import create_model
from fedhei.training import recipes
from fedhei.training.pretrain import PretrainSpec, cached_path, pretrain, timing_path
from fedhei.training.recipes import RECIPES, Schedule, train_with_recipe


def spec(**settings: Any) -> PretrainSpec:
    """The base model a scenario of vit-micro with these settings pre-trains."""
    return Scenario(model="vit-micro", **settings).pretrain_spec()


def test_pretrain_on_synthetic_beats_chance_and_is_cached(tmp_path: Path) -> None:
    data = make_synthetic()
    plain = dataclasses.replace(spec(pretrain_recipe="plain", pretrain_epochs=2.0, pretrain_lr=3e-3), all_train=True)
    first = pretrain(data, plain, device="cpu", out=tmp_path / "base.safetensors")
    assert not first.cached
    assert first.test_accuracy > 0.5, f"chance is 0.1; got {first.test_accuracy}"
    second = pretrain(data, plain, device="cpu")
    assert second.cached and second.test_accuracy == pytest.approx(first.test_accuracy, abs=1e-6)
    assert first.seconds is not None and second.seconds == pytest.approx(first.seconds, abs=0.06)
    assert load_checkpoint(tmp_path / "base.safetensors") is not None


def test_the_same_settings_pretrain_byte_identical_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_synthetic(num_train=1200, num_test=200)
    deit = spec(pretrain_recipe="deit", pretrain_epochs=0.4, pretrain_batch_size=64, public_fraction=0.5)
    files = []
    for name in ("first", "second"):
        monkeypatch.setenv("FEDHEI_CACHE", str(tmp_path / name))
        result = pretrain(data, deit, device="cpu")
        assert not result.cached and result.seconds is not None
        files.append(result.path)
    assert files[0] != files[1] and files[0].name == files[1].name
    assert files[0].read_bytes() == files[1].read_bytes()
    # The wall-clock time is beside the checkpoint, never inside it.
    assert "seconds" not in read_metadata(files[0])
    assert json.loads(timing_path(files[0]).read_text())["seconds"] >= 0
    # Another seed is another model.
    other = pretrain(data, dataclasses.replace(deit, seed=1), device="cpu")
    assert other.path.read_bytes() != files[1].read_bytes()


def test_every_recipe_setting_is_part_of_the_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_synthetic(num_train=100, num_test=20)
    smooth = spec(pretrain_recipe="smooth")
    before = cached_path(data, smooth)
    assert len({before, *(cached_path(data, dataclasses.replace(smooth, recipe=name)) for name in RECIPES)}) == len(RECIPES)
    assert before != cached_path(data, dataclasses.replace(smooth, batch_size=256))
    edited = dataclasses.replace(RECIPES["smooth"], ema_decay=0.99)
    monkeypatch.setitem(recipes.RECIPES, "smooth", edited)
    assert cached_path(data, smooth) != before


def test_the_deit_recipe_runs_every_piece() -> None:
    recipe = RECIPES["deit"]
    assert recipe.randaugment and recipe.mixes and recipe.label_smoothing > 0 and recipe.ema_decay > 0
    assert recipe.warmup_fraction > 0
    data = make_synthetic(num_train=1000, num_test=10)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("vit-micro")
    start = {name: value.clone() for name, value in model.state_dict().items()}
    steps: list[int] = []
    stats = train_with_recipe(model, data.train.images, data.train.labels, recipe, Schedule(epochs=0.5, batch_size=50, lr=3e-3),
                              seed=0, on_step=lambda step, total, loss: steps.append(total))
    assert stats["steps"] == 10 and steps == [10] * 10 and np.isfinite(stats["train-loss"])
    moved = [name for name, value in model.state_dict().items() if not torch.equal(value, start[name])]
    assert "head.weight" in moved and "blocks.0.attn.qkv.weight" in moved


def test_augmentation_changes_images_but_not_their_shape() -> None:
    images = make_synthetic(num_train=16, num_test=1).train.images
    out = recipes._Augment(RECIPES["smooth-ra"])(images)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)


@pytest.mark.parametrize(("settings", "message"), [({"public-fraction": 0.0}, "public-fraction is 0.0"),
                                                   ({"pretrain-recipe": "fancy"}, "pretrain-recipe is 'fancy'"),
                                                   ({"pretrain-batch-size": 1}, "pretrain-batch-size is 1; it must be >= 2"),
                                                   ({"pretrain-lr": 0.0}, "pretrain-lr")])
def test_bad_pretrain_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(FedheiError, match=message):
        Scenario.from_mapping({"model": "vit-micro", **settings})


def test_pretrain_command_writes_a_loadable_base_model(tmp_path: Path, fedhei_cli) -> None:
    out = tmp_path / "cli.safetensors"
    result = fedhei_cli("pretrain", "--data", "synthetic", "--model", "vit-micro", "--pretrain-epochs", "0.2",
                        "--public-fraction", "0.5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "smooth recipe" in result.stdout
    assert load_checkpoint(out).num_classes == 10


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--model", "vit-huge"], "unknown model"), (["--pretrain-epochs", "0"], "pretrain-epochs is 0.0"),
     (["--pretrain-recipe", "fancy"], "pretrain-recipe is 'fancy'")],
)
def test_bad_pretrain_input_is_one_line_and_nonzero(arguments: list[str], message: str, expect_one_line_error) -> None:
    expect_one_line_error("pretrain", "--data", "synthetic", *arguments, message=message)

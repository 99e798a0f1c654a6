from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import Cifar10, load_cifar10, make_synthetic
from fedhei.errors import FedheiError
from fedhei.models.checkpoints import load_checkpoint, read_metadata
from fedhei.models.registry import create_model
from fedhei.training import recipes
from fedhei.training.loops import batches_for, evaluate
from fedhei.training.pretrain import (
    SHIPPED_DIR,
    PretrainSpec,
    base_model,
    cached_path,
    pretrain,
    shipped_base,
    timing_path,
)
from fedhei.training.recipes import RECIPES, Schedule, train_with_recipe

REPO = Path(__file__).resolve().parents[1]
SHIPPED = SHIPPED_DIR / "vit-tiny-c10.safetensors"
# The shipped scenarios that pre-train a base on the public slice (an image model, no base-model of their own).
PRETRAINING_SCENARIOS = [path for path in sorted((REPO / "scenarios").glob("*.toml"))
                         if not Scenario.from_toml(path).base_model and Scenario.from_toml(path).model.startswith("vit-")]


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


def _as_real_cifar10(data: Cifar10) -> Cifar10:
    """Synthetic images under a real copy's name: what the shipped base is matched on is the source, not the pixels."""
    return dataclasses.replace(data, source="cifar-10-jpeg", fingerprint="jpeg-test")


def test_the_shipped_base_is_a_float16_vit_tiny_c10_with_its_recipe_and_accuracy_recorded() -> None:
    metadata = read_metadata(SHIPPED)
    model = load_checkpoint(SHIPPED)
    assert metadata["model"] == "vit-tiny-c10" and metadata["dtype"] == "float16"
    # 58.1%: 1.9 points short of the 60% aimed at (docs/data-and-models.md), 12 above the 30-epoch base it replaced.
    assert float(metadata["test-accuracy"]) >= 0.58
    assert abs(float(metadata["test-accuracy"]) - float(metadata["float32-test-accuracy"])) <= 0.001
    assert metadata["data"].startswith("jpeg-") and int(metadata["train-images"]) == 5000
    assert all(value.dtype == torch.float32 for value in model.state_dict().values())
    with safe_open(str(SHIPPED), framework="pt") as handle:
        assert {handle.get_slice(name).get_dtype() for name in handle.keys()} == {"F16"}


@pytest.mark.parametrize("path", PRETRAINING_SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_starts_from_the_shipped_base(path: Path) -> None:
    scenario = Scenario.from_toml(path)
    data = _as_real_cifar10(make_synthetic(num_train=20, num_test=10))
    assert shipped_base(data, scenario.pretrain_spec()) == SHIPPED
    loaded = base_model(data, scenario.pretrain_spec(), device="cpu")
    assert torch.equal(loaded.state_dict()["head.weight"], load_checkpoint(SHIPPED).state_dict()["head.weight"])


def test_the_shipped_base_is_not_used_for_other_settings_or_synthetic_data() -> None:
    shipped_spec = Scenario.from_toml(REPO / "scenarios" / "quickstart.toml").pretrain_spec()
    real = _as_real_cifar10(make_synthetic(num_train=20, num_test=10))
    assert shipped_base(make_synthetic(num_train=20, num_test=10), shipped_spec) is None
    for other in (dataclasses.replace(shipped_spec, epochs=shipped_spec.epochs + 1), dataclasses.replace(shipped_spec, seed=1),
                  dataclasses.replace(shipped_spec, recipe="plain"), dataclasses.replace(shipped_spec, model="vit-small-c10")):
        assert shipped_base(real, other) is None


@pytest.mark.slow
def test_the_shipped_base_scores_its_recorded_accuracy_on_the_copy_it_was_trained_on(real_tarball: Path) -> None:
    data, metadata = load_cifar10(str(real_tarball)), read_metadata(SHIPPED)
    if data.fingerprint != metadata["data"]:
        pytest.skip(f"the shipped base was measured on {metadata['data']}, this copy is {data.fingerprint}")
    model = load_checkpoint(SHIPPED)
    assert f"{evaluate(model, batches_for(model, data.test))['accuracy']:.6f}" == metadata["test-accuracy"]


def test_pretrain_float16_writes_half_the_bytes_with_the_copys_own_accuracy(tmp_path: Path, fedhei_cli) -> None:
    half = tmp_path / "float16.safetensors"
    result = fedhei_cli("pretrain", "--data", "synthetic", "--model", "vit-micro", "--pretrain-epochs", "0.2",
                        "--public-fraction", "0.5", "--float16", "--out", str(half))
    assert result.returncode == 0, result.stderr
    assert "float16 copy: test accuracy" in result.stdout and "points against float32" in result.stdout
    # The float32 pre-train stays in the cache (the subprocess shares this session's FEDHEI_CACHE).
    trained = cached_path(make_synthetic(), spec(pretrain_epochs=0.2, public_fraction=0.5))
    original, copy = read_metadata(trained), read_metadata(half)
    assert copy["dtype"] == "float16" and copy["float32-test-accuracy"] == original["test-accuracy"]
    assert copy["spec"] == original["spec"]
    assert half.stat().st_size < 0.6 * trained.stat().st_size
    reloaded, exact = load_checkpoint(half).state_dict(), load_checkpoint(trained).state_dict()
    assert all(torch.equal(reloaded[name], exact[name].half().float()) for name in exact)


def test_pretrain_float16_without_out_is_one_line_and_nonzero(expect_one_line_error) -> None:
    expect_one_line_error("pretrain", "--data", "synthetic", "--model", "vit-micro", "--float16", message="give --out")

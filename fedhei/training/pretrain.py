"""Pre-training of the shared base model on the public slice no client holds.

Without hub access a federation still needs a pre-trained starting point; fedhei
trains one on the public slice and caches it under a hash of everything that
decides it (model, recipe and every setting it names, schedule, seed, slice, data
content), so scenarios that agree on those share one base model and never
pre-train twice. The same settings give a byte-identical file: initialization and
training draw from named seeded streams, and the wall-clock time lives in a
sidecar JSON beside the cached file, never in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fedhei import atomic, seeding
from fedhei.cache import cache_dir, config_hash
from fedhei.data.cifar10 import SYNTHETIC, Cifar10, load_cifar10_cached
from fedhei.data.partition import public_slice
from fedhei.models import language
from fedhei.models.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from fedhei.models.registry import create_model, resolve_model_name
from fedhei.models.safetensors_file import write_safetensors
from fedhei.terminal import progress_bar
from fedhei.training.device import pick_device
from fedhei.training.loops import batches_for, evaluate
from fedhei.training.recipes import RECIPES, Recipe, Schedule, train_with_recipe

log = logging.getLogger(__name__)

# The base models fedhei ships, one file per model name: a pre-train of :func:`pretrain` cast to
# float16 by :func:`write_float16`, so that the shipped scenarios start from a base worth
# personalizing without pre-training on first use.
SHIPPED_DIR = Path(__file__).resolve().parent / "bases"


@dataclass(frozen=True)
class PretrainSpec:
    """Everything that decides a base model; a scenario's ``pretrain_spec()`` builds it from its checked settings."""

    model: str
    # A name in RECIPES: how the model is regularized (augmentation, soft targets, warm-up, EMA).
    recipe: str
    epochs: float
    batch_size: int
    lr: float
    seed: int
    public_fraction: float
    # Train on the whole training set (a centralized upper bound), not just the public slice.
    all_train: bool = False

    def __post_init__(self) -> None:
        # 30 and 30.0 are the same schedule; the cache key must not tell them apart.
        for name in ("epochs", "lr", "public_fraction"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def recipe_settings(self) -> Recipe:
        return RECIPES[self.recipe]


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    test_accuracy: float
    # Wall-clock training time, from the sidecar; None for a cached model that has none.
    seconds: float | None
    train_images: int
    cached: bool


def training_indices(data: Cifar10, spec: PretrainSpec) -> np.ndarray:
    if spec.all_train:
        return np.arange(len(data.train))
    return public_slice(data.train.labels, spec.public_fraction, spec.seed)


def cached_path(data: Cifar10, spec: PretrainSpec) -> Path:
    """The cache file; its key holds the recipe's settings, so editing a recipe retrains."""
    key = config_hash({**asdict(spec), "recipe-settings": asdict(spec.recipe_settings), "data": data.fingerprint})
    return cache_dir() / "base" / f"{spec.model}-{key}.safetensors"


def timing_path(checkpoint: Path) -> Path:
    """The sidecar holding a checkpoint's training time, kept out of the checkpoint so that it repeats byte for byte."""
    return checkpoint.with_name(f"{checkpoint.stem}.timing.json")


def _recorded_seconds(checkpoint: Path) -> float | None:
    sidecar = timing_path(checkpoint)
    if not sidecar.is_file():
        return None
    try:
        return float(json.loads(sidecar.read_text(encoding="utf-8"))["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pretrain(data: Cifar10, spec: PretrainSpec, *, device: str, out: Path | None = None) -> PretrainResult:
    """Train a base model (or reuse the cached one) and write it to ``out`` and the cache."""
    cache_file = cached_path(data, spec)
    if cache_file.is_file():
        metadata = read_metadata(cache_file)
        if out is not None and out.resolve() != cache_file.resolve():
            save_checkpoint(load_checkpoint(cache_file), out, metadata)
        return PretrainResult(out or cache_file, float(metadata["test-accuracy"]), _recorded_seconds(cache_file),
                              int(metadata["train-images"]), cached=True)

    model = create_model(spec.model, seed=seeding.seed_for(spec.seed, "pretrain-init"))
    model.to(pick_device(device))
    indices = training_indices(data, spec)
    schedule = Schedule(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr)
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"pretrain {spec.model} ({spec.recipe})", total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        train_with_recipe(model, data.train.images[indices], data.train.labels[indices], spec.recipe_settings,
                          schedule, seed=spec.seed, on_step=on_step)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, batches_for(model, data.test))["accuracy"]
    metadata = {
        "model": spec.model,
        "test-accuracy": f"{accuracy:.6f}",
        "train-images": str(len(indices)),
        "spec": str(asdict(spec)),
        "recipe-settings": str(asdict(spec.recipe_settings)),
        "data": data.fingerprint,
    }
    save_checkpoint(model, cache_file, metadata)
    atomic.write_json(timing_path(cache_file), {"seconds": round(seconds, 1), "device": str(pick_device(device)),
                                               "threads": torch.get_num_threads()})
    if out is not None:
        save_checkpoint(model, out, metadata)
    log.info("pre-trained %s: test accuracy %.4f in %.0f s", spec.model, accuracy, seconds)
    return PretrainResult(out or cache_file, accuracy, seconds, len(indices), cached=False)


def shipped_base(data: Cifar10, spec: PretrainSpec) -> Path | None:
    """The shipped base that is ``spec``'s pre-train, if fedhei ships one: the same model, recipe
    (every setting it names), schedule, seed and slice, recorded in its metadata.

    Any copy of the real CIFAR-10 gets it (the metadata keeps the fingerprint of the copy it
    was trained on); synthetic data never does, since the base was not trained on it.
    """
    path = SHIPPED_DIR / f"{spec.model}.safetensors"
    if data.source == SYNTHETIC or not path.is_file():
        return None
    metadata = read_metadata(path)
    recorded = (metadata.get("spec"), metadata.get("recipe-settings"))
    return path if recorded == (str(asdict(spec)), str(asdict(spec.recipe_settings))) else None


def write_float16(pretrained: Path, data: Cifar10, out: Path) -> tuple[float, float]:
    """Write ``pretrained`` cast to float16 to ``out`` (half the bytes: the form fedhei ships a base in),
    with the copy's own test accuracy, measured as runs load it (back into float32), in its metadata.

    Returns the float32 original's test accuracy and the copy's, so that what the cast loses is measured.
    """
    metadata = read_metadata(pretrained)
    model = load_checkpoint(pretrained)
    halves = {name: value.detach().half() for name, value in model.state_dict().items()}
    model.load_state_dict(halves)
    accuracy = evaluate(model, batches_for(model, data.test))["accuracy"]
    write_safetensors(out, halves, {**metadata, "dtype": "float16", "test-accuracy": f"{accuracy:.6f}",
                                    "float32-test-accuracy": metadata["test-accuracy"]})
    return float(metadata["test-accuracy"]), accuracy


HUB = "hub"


def base_model(data: Cifar10, spec: PretrainSpec, *, device: str, checkpoint: str = "") -> VisionTransformer:
    """The federation's starting point: a checkpoint path, timm's hub weights ("hub", online
    only), else the pre-train on the public slice: shipped with fedhei, cached, or trained now."""
    if checkpoint == HUB:
        return create_model(spec.model, pretrained=True)
    if checkpoint:
        return load_checkpoint(checkpoint, spec.model)
    return load_checkpoint(shipped_base(data, spec) or pretrain(data, spec, device=device).path)


def language_base_model(spec: PretrainSpec, checkpoint: str = "") -> nn.Module:
    """A language model's starting point, with no text pre-training: ``checkpoint``, else the
    weights of the checkpoint folder the model is, else the model's random initialization,
    drawn from the pre-training seed's stream as an image model's pre-training starts."""
    if checkpoint:
        return load_checkpoint(checkpoint, spec.model)
    if language.is_checkpoint_folder(spec.model):
        return load_checkpoint(spec.model)
    return create_model(spec.model, seed=seeding.seed_for(spec.seed, "pretrain-init"))


def starting_model(spec: PretrainSpec, *, device: str, checkpoint: str = "", data_source: str = "") -> nn.Module:
    """A federation's base model, for any model: a language model's, or an image model's
    :func:`base_model` on the scenario's data (loaded, or pre-trained and cached, here)."""
    if language.is_language_model(resolve_model_name(spec.model)):
        return language_base_model(spec, checkpoint)
    return base_model(load_cifar10_cached(data_source or None), spec, device=device, checkpoint=checkpoint)

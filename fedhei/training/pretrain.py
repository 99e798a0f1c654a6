"""Pre-training of the shared base model on the public slice no client holds.

Without hub access a federation still needs a pre-trained starting point; fedhei
trains one on the public slice and caches it under a hash of everything that
decides it (model, schedule, seed, slice, data content), so scenarios that agree
on those share one base model and never pre-train twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from timm.models.vision_transformer import VisionTransformer

from fedhei.cache import cache_dir, config_hash
from fedhei.data.cifar10 import Cifar10
from fedhei.data.partition import public_slice
from fedhei.errors import FedheiError
from fedhei.models.checkpoints import load_checkpoint, read_metadata, save_checkpoint
from fedhei.models.registry import create_model, resolve_model_name
from fedhei.reporting.progress import progress_bar
from fedhei.training.device import pick_device
from fedhei.training.loops import TrainSettings, batches_for, evaluate, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainSpec:
    model: str = "vit-tiny-c10"
    epochs: float = 10.0
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    public_fraction: float = 0.1
    # Train on the whole training set (a centralized upper bound), not just the public slice.
    all_train: bool = False

    def __post_init__(self) -> None:
        # 30 and 30.0 are the same schedule; the cache key must not tell them apart.
        for name in ("epochs", "lr", "public_fraction"):
            object.__setattr__(self, name, float(getattr(self, name)))
        resolve_model_name(self.model)
        if not self.epochs > 0:
            raise FedheiError(f"pretrain epochs is {self.epochs}; it must be > 0")
        if not self.all_train and not 0 < self.public_fraction < 1:
            raise FedheiError(f"public-fraction is {self.public_fraction}; pre-training needs a public slice in (0, 1), "
                              "or ask for all of the training set")


@dataclass(frozen=True)
class PretrainResult:
    path: Path
    test_accuracy: float
    seconds: float
    train_images: int
    cached: bool


def training_indices(data: Cifar10, spec: PretrainSpec) -> np.ndarray:
    if spec.all_train:
        return np.arange(len(data.train))
    return public_slice(data.train.labels, spec.public_fraction, spec.seed)


def cached_path(data: Cifar10, spec: PretrainSpec) -> Path:
    key = config_hash({**asdict(spec), "data": data.fingerprint})
    return cache_dir() / "base" / f"{spec.model}-{key}.safetensors"


def pretrain(data: Cifar10, spec: PretrainSpec, out: Path | None = None, device: str = "auto") -> PretrainResult:
    """Train a base model (or reuse the cached one) and write it to ``out`` and the cache."""
    cache_file = cached_path(data, spec)
    if cache_file.is_file():
        metadata = read_metadata(cache_file)
        if out is not None and out.resolve() != cache_file.resolve():
            save_checkpoint(load_checkpoint(cache_file), out, metadata)
        return PretrainResult(out or cache_file, float(metadata["test-accuracy"]), float(metadata["seconds"]),
                              int(metadata["train-images"]), cached=True)

    model = create_model(spec.model).to(pick_device(device))
    indices = training_indices(data, spec)
    train_batches = batches_for(model, data.train, indices)
    settings = TrainSettings(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr)
    started = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"pretrain {spec.model}", total=None, status="")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, status=f"loss {loss:.3f}")

        train(model, train_batches, settings, seed=spec.seed, on_step=on_step)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, batches_for(model, data.test))["accuracy"]
    metadata = {
        "model": spec.model,
        "test-accuracy": f"{accuracy:.6f}",
        "seconds": f"{seconds:.1f}",
        "train-images": str(len(indices)),
        "spec": str(asdict(spec)),
        "data": data.fingerprint,
    }
    save_checkpoint(model, cache_file, metadata)
    if out is not None:
        save_checkpoint(model, out, metadata)
    log.info("pre-trained %s: test accuracy %.4f in %.0f s", spec.model, accuracy, seconds)
    return PretrainResult(out or cache_file, accuracy, seconds, len(indices), cached=False)


HUB = "hub"


def base_model(data: Cifar10, spec: PretrainSpec, checkpoint: str = "", device: str = "auto") -> VisionTransformer:
    """The federation's starting point: a checkpoint path, timm's hub weights ("hub", online
    only), else the cached (or freshly trained) pre-train on the public slice."""
    if checkpoint == HUB:
        return create_model(spec.model, pretrained=True)
    if checkpoint:
        return load_checkpoint(checkpoint, spec.model)
    return load_checkpoint(pretrain(data, spec, device=device).path)

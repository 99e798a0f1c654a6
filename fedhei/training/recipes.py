"""Named pre-training recipes, and the loop that trains a base model with one.

A ViT trained from scratch on a few thousand images overfits long before it learns
much; the data-efficient training of DeiT (Touvron et al. 2021) fights that with
strong augmentation and soft targets. A recipe names such a set of choices, each
one from timm (RandAugment, Mixup/CutMix, label smoothing, cosine schedule with
warm-up, EMA of weights), so that the cache key of a base model can hold all of
them and the former plain recipe stays one name away for comparison.

Every random draw (initialization aside, which the caller seeds) is on a named
stream of :mod:`fedhei.seeding`: the batch order per epoch, and the augmentation
and mixing per batch, so the same settings give a byte-identical model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import Mixup, rand_augment_transform
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from torchvision.transforms import v2

from fedhei import seeding
from fedhei.data.cifar10 import IMAGE_SHAPE, NUM_CLASSES
from fedhei.models.registry import input_size
from fedhei.training.loops import MEAN, STD


@dataclass(frozen=True)
class Recipe:
    """How a base model is regularized and scheduled; the amounts (epochs, lr, batch) are the spec's."""

    # timm's RandAugment configuration string ("" for none), e.g. "rand-m9-mstd0.5-inc1".
    randaugment: str = ""
    # Beta concentrations of Mixup and CutMix (0 turns each off); with both on, each batch uses one.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    # Linear warm-up over this fraction of the optimizer steps, then cosine decay to zero.
    warmup_fraction: float = 0.0
    weight_decay: float = 0.05
    # Decay of an exponential moving average of the weights (0: none); the average is the model kept.
    ema_decay: float = 0.0

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


_SMOOTH = Recipe(label_smoothing=0.1, warmup_fraction=0.05, ema_decay=0.999)

RECIPES: dict[str, Recipe] = {
    # fedhei's first recipe: random crop and flip, hard labels, cosine decay without warm-up.
    "plain": Recipe(),
    # The CPU default: crop and flip, label smoothing, warm-up, EMA. At a few dozen epochs
    # a small ViT is still under-trained, and stronger augmentation only slows it down.
    "smooth": _SMOOTH,
    # The same with timm's RandAugment at a moderate magnitude (2 ops, magnitude 5).
    "smooth-ra": dataclasses.replace(_SMOOTH, randaugment="rand-m5-n2-mstd0.5-inc1"),
    # DeiT's full data-efficient set: RandAugment at magnitude 9 and Mixup/CutMix on top,
    # made for hundreds of epochs (DeiT trains 300); over the few dozen a CPU affords it loses.
    "deit": dataclasses.replace(_SMOOTH, randaugment="rand-m9-mstd0.5-inc1", mixup_alpha=0.8, cutmix_alpha=1.0),
}


@dataclass(frozen=True)
class Schedule:
    epochs: float
    batch_size: int
    lr: float


class _Augment:
    """Per-image augmentation on uint8 images: crop and flip, then RandAugment when the recipe has it."""

    def __init__(self, recipe: Recipe) -> None:
        side = IMAGE_SHAPE[0]
        self.crop_flip = v2.Compose([v2.RandomCrop(side, padding=4, padding_mode="edge"), v2.RandomHorizontalFlip()])
        # timm's own hyper-parameters for small images: translations scaled to the side, fill with the mean.
        # The magnitude stays below 10, where timm's posterize would ask Pillow (>= 12) to keep 0 bits, which it refuses.
        hparams = dict(translate_const=int(side * 0.45), img_mean=tuple(round(255 * float(m)) for m in MEAN.flatten()),
                       magnitude_max=9.9)
        self.randaugment = rand_augment_transform(recipe.randaugment, hparams) if recipe.randaugment else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for row, image in enumerate(images):
            picture = self.crop_flip(Image.fromarray(image))
            if self.randaugment is not None:
                picture = self.randaugment(picture)
            out[row] = np.asarray(picture)
        return out


def _to_model_input(images: np.ndarray, side: int) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> normalized (N, 3, side, side) float."""
    floats = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD
    if floats.shape[-1] != side:
        floats = F.interpolate(floats, size=side, mode="bilinear", align_corners=False)
    return floats


def train_with_recipe(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe,
    schedule: Schedule,
    seed: int,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on uint8 ``images`` with ``recipe``; the EMA weights are kept when it has one.

    Batches are full (the last partial batch of an epoch is dropped: Mixup pairs a
    batch with its reverse). Returns the mean training loss and the steps taken.
    """
    device = next(model.parameters()).device
    batch_size = min(schedule.batch_size, len(labels) - len(labels) % 2)
    steps_per_epoch = len(labels) // batch_size
    total_steps = max(1, math.ceil(schedule.epochs * steps_per_epoch))
    warmup_steps = round(recipe.warmup_fraction * total_steps)
    optimizer = create_optimizer_v2(model, "adamw", lr=schedule.lr, weight_decay=recipe.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=total_steps - warmup_steps, warmup_t=warmup_steps,
                                  warmup_prefix=True, t_in_epochs=False)
    mixup = (Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                   label_smoothing=recipe.label_smoothing, num_classes=NUM_CLASSES) if recipe.mixes else None)
    criterion: nn.Module = SoftTargetCrossEntropy() if mixup else nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    ema = ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=True) if recipe.ema_decay > 0 else None
    augment, side, targets = _Augment(recipe), input_size(model), torch.from_numpy(labels.astype(np.int64))
    model.train()
    losses: list[float] = []
    for step in range(total_steps):
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0:
            order = torch.randperm(len(labels), generator=seeding.torch_generator(seed, "pretrain-order", epoch)).numpy()
        chosen = order[position * batch_size : (position + 1) * batch_size]
        with seeding.all_seeded(seed, "pretrain-augment", epoch, position):
            batch, batch_targets = _to_model_input(augment(images[chosen]), side), targets[chosen]
            if mixup is not None:
                batch, batch_targets = mixup(batch, batch_targets)
        loss = criterion(model(batch.to(device)), batch_targets.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
        if ema is not None:
            ema.update(model, step=step)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step + 1, total_steps, losses[-1])
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return {"train-loss": float(np.mean(losses)), "steps": float(total_steps)}

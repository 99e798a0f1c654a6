"""Training and evaluation with pruning masks kept enforced, for any task.

The same ``train`` and ``evaluate`` serve image classification (:class:`ArrayBatches`
over in-memory uint8 images) and language modelling (token batches from
:mod:`fedhei.data.text`): the model's task (:mod:`fedhei.models.tasks`, chosen by
its architecture adapter) turns a batch into flat logits and labels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedhei import seeding
from fedhei.data.batching import batch_indices
from fedhei.data.cifar10 import Split
from fedhei.models.adapters import task_for
from fedhei.models.registry import input_size
from fedhei.models.tasks import Batches, Totals
from fedhei.training.optimizers import SGD

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)

Masks = Mapping[str, torch.Tensor]
# The distinct examples one call of :func:`train` trained on.
TRAINED_EXAMPLES = "trained-examples"
# The compute precisions of an evaluation. Training always runs in float32 (bfloat16 trained slower on our CPU);
# a bfloat16 forward pass evaluates faster where the CPU (AVX-512-BF16, AMX) or the GPU computes in bfloat16.
FLOAT32, BFLOAT16 = "float32", "bfloat16"
EVAL_PRECISIONS = (FLOAT32, BFLOAT16)


@dataclass(frozen=True)
class TrainSettings:
    """One call of :func:`train`: its budget, its optimizer and how its learning rate moves inside the call.

    The scenario builds it (``train_settings``, ``finetune_settings``, ``centralized_settings``)
    from its checked settings, so nothing here has a default of its own but ``augment``.
    """

    epochs: float
    batch_size: int
    lr: float
    weight_decay: float
    # Caps the optimizer steps, so a scenario can bound a client's work on large shards.
    max_steps: int | None
    # One of CLIENT_OPTIMIZERS.
    optimizer: str
    # SGD's momentum (ignored by AdamW).
    momentum: float
    # True: a cosine from ``lr`` to 0 over this call (a standalone fine-tune). False: ``lr`` throughout,
    # for a federated round whose rate the federation's schedule sets from round to round.
    decay_in_call: bool
    augment: bool = True

    def total_steps(self, examples: int) -> int:
        """The optimizer steps this call takes on ``examples`` examples: its epochs, capped by ``max_steps``."""
        steps = max(1, math.ceil(self.epochs * math.ceil(examples / self.batch_size)))
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def build_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == SGD:
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)


class ArrayBatches:
    """Mini-batches over a subset of a :class:`Split`, converted to normalized float tensors.

    Images stay uint8 until a batch is drawn, so a shard costs 3 KB per image in memory.
    """

    def __init__(self, split: Split, indices: np.ndarray | None = None, image_size: int = 32) -> None:
        chosen = np.arange(len(split)) if indices is None else np.asarray(indices)
        self.images = torch.from_numpy(np.ascontiguousarray(split.images[chosen])).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(split.labels[chosen].astype(np.int64))
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> ArrayBatches:
        """The same batches over some of these images (FedALA learns its weights on a sample)."""
        chosen = copy.copy(self)
        index = torch.from_numpy(np.asarray(indices, dtype=np.int64))
        chosen.images, chosen.labels = self.images[index], self.labels[index]
        return chosen

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        for index in batch_indices(len(self), batch_size, shuffle, generator):
            images = self.images[index]
            if augment:
                images = _random_crop_flip(images, generator)
            yield self._to_float(images), self.labels[index]

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        floats = (images.float() / 255.0 - MEAN) / STD
        if self.image_size != floats.shape[-1]:
            floats = F.interpolate(floats, size=self.image_size, mode="bilinear", align_corners=False)
        return floats


def _random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation: a random 32x32 crop of the 4-pixel-padded image, and a flip."""
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    size = images.shape[-1]
    offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator)
    flips = torch.rand(len(images), generator=generator) < 0.5
    out = torch.empty_like(images)
    for row, ((dy, dx), flip) in enumerate(zip(offsets.tolist(), flips.tolist(), strict=True)):
        crop = padded[row, :, dy : dy + size, dx : dx + size]
        out[row] = crop.flip(-1) if flip else crop
    return out


def batches_for(model: nn.Module, split: Split, indices: np.ndarray | None = None) -> ArrayBatches:
    """Batches sized for the model's input (CIFAR images are resized for 224-pixel ViTs)."""
    return ArrayBatches(split, indices, image_size=input_size(model))


# A training loss from the model, a batch's inputs and its targets.
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def apply_masks(model: nn.Module, masks: Masks | None) -> None:
    """Zero every pruned weight; called after each optimizer step so pruned stays pruned."""
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].device, params[name].dtype))


def train(
    model: nn.Module,
    data: Batches,
    settings: TrainSettings,
    masks: Masks | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    trainable: set[str] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    objective: Objective | None = None,
) -> dict[str, float]:
    """``settings.optimizer`` over ``settings.epochs`` (fractions allowed), capped at ``settings.max_steps``.

    The optimizer starts fresh in every call, as a federated client's does in every round;
    with ``settings.decay_in_call`` its rate follows a cosine to 0 over the call.

    ``trainable`` limits which parameters move (FedRep trains head and body in turns).
    ``regularizer(model)`` is added to the loss (Ditto's pull toward the global model).
    ``objective(model, inputs, targets)`` replaces the task's loss (distillation's soft targets).
    ``on_step(step, total_steps, loss)`` drives a progress display.
    Returns the mean training loss (per prediction: per image or per token), the number of
    examples seen, and the number of distinct examples trained on (what a federated update
    is weighted by: a client capped at a few steps trained on fewer images than it holds).
    """
    task = task_for(model)
    device = device or next(model.parameters()).device
    model.to(device).train()
    params = [p for n, p in model.named_parameters() if trainable is None or n in trainable]
    if not params or len(data) == 0:
        return {"train-loss": float("nan"), "examples": 0.0, TRAINED_EXAMPLES: 0.0}
    total_steps = settings.total_steps(len(data))
    optimizer = settings.build_optimizer(params)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps) if settings.decay_in_call else None
    apply_masks(model, masks)
    losses, seen, step, epoch = [], 0, 0, 0
    while step < total_steps:
        for inputs, targets in data.batches(settings.batch_size, shuffle=True, seed=seeding.seed_for(seed, "epoch", epoch), augment=settings.augment):
            loss = (objective or task.loss)(model, inputs.to(device), targets.to(device))
            if regularizer is not None:
                loss = loss + regularizer(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            apply_masks(model, masks)
            losses.append(loss.item())
            seen += len(targets)
            step += 1
            if on_step is not None:
                on_step(step, total_steps, losses[-1])
            if step >= total_steps:
                break
        epoch += 1
    return {"train-loss": float(np.mean(losses)), "examples": float(seen), TRAINED_EXAMPLES: float(min(seen, len(data)))}


def eval_precision(device: torch.device, precision: str) -> AbstractContextManager[object]:
    """The context an evaluation's forward pass runs in (one of EVAL_PRECISIONS): bfloat16 autocast, or plain float32."""
    if precision == FLOAT32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Batches, batch_size: int = 256, device: torch.device | None = None, precision: str = FLOAT32
) -> dict[str, float]:
    """The task's metrics: accuracy and mean loss, and perplexity for a language model.

    ``precision`` is the forward pass's; loss and argmax are taken on its logits cast to float32.
    """
    task = task_for(model)
    device = device or next(model.parameters()).device
    model.to(device).eval()
    totals = Totals()
    for inputs, targets in data.batches(batch_size):
        with eval_precision(device, precision):
            logits, labels = task.predictions(model, inputs.to(device), targets.to(device))
        logits = logits.float()
        totals.loss += F.cross_entropy(logits, labels, reduction="sum").item()
        totals.correct += int((logits.argmax(dim=1) == labels).sum().item())
        totals.predictions += labels.numel()
        totals.examples += len(inputs)
    return task.summary(totals)


@torch.no_grad()
def correct_per_example(model: nn.Module, data: ArrayBatches, batch_size: int = 256, precision: str = FLOAT32) -> np.ndarray:
    """1.0 where the model's top prediction is the label, per image in order: what a paired comparison of
    two models (or of one model at two precisions) on the same test images resamples."""
    device = next(model.parameters()).device
    model.eval()
    hits = []
    for inputs, targets in data.batches(batch_size):
        with eval_precision(device, precision):
            logits = model(inputs.to(device))
        hits.append((logits.float().argmax(dim=1).cpu() == targets).float())
    return torch.cat(hits).numpy().astype(np.float64) if hits else np.zeros(0)

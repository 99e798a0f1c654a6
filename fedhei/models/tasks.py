"""Tasks: how a model's outputs are read, trained on and summed up.

Image classification and causal language modelling differ in two places only:
how a batch's logits come out of the model, and what the evaluation reports.
Both end in a per-prediction classification (an image's class, or each token's
successor), so a task hands every loop, scorer and signal the same flat
``(logits, labels)`` pair and nothing downstream branches on the model type.
A model's task comes from its architecture adapter (``fedhei.models.adapters.task_for``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Batches(Protocol):
    """Mini-batches of (inputs, targets): images and labels, or token ids and next-token ids."""

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, augment: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def subset(self, indices: Sequence[int]) -> Batches:
        """The same batches over some of the examples (FedALA learns its weights on a sample)."""
        ...


@dataclass
class Totals:
    """Sums over an evaluation: loss over predictions, correct predictions, predictions, examples."""

    loss: float = 0.0
    correct: int = 0
    predictions: int = 0
    examples: int = 0


@dataclass(frozen=True)
class Task(ABC):
    """The shared part of every task: flat predictions and their loss."""

    name: str

    @abstractmethod
    def logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits for a batch, classes on the last axis."""

    @abstractmethod
    def summary(self, totals: Totals) -> dict[str, float]:
        """The evaluation's metrics from its sums."""

    def predictions(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, labels)`` as ``(N, classes)`` and ``(N,)``: one row per prediction."""
        logits = self.logits(model, inputs)
        return logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy per prediction: the training objective and the Fisher scorer's loss."""
        return F.cross_entropy(*self.predictions(model, inputs, targets))


@dataclass(frozen=True)
class ImageClassification(Task):
    name: str = "image-classification"

    def logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(inputs)

    def summary(self, totals: Totals) -> dict[str, float]:
        """Accuracy and mean loss; an empty split gives NaN rather than a fake zero."""
        if totals.predictions == 0:
            return {"accuracy": float("nan"), "loss": float("nan"), "examples": 0.0}
        return {"accuracy": totals.correct / totals.predictions, "loss": totals.loss / totals.predictions,
                "examples": float(totals.examples)}


# A language model's figure beside its next-token accuracy: exp of the mean loss per token.
PERPLEXITY = "perplexity"
# exp() of more overflows a float; a loss that large means the model has lost all its knowledge anyway.
_LARGEST_EXPONENT = 700.0


@dataclass(frozen=True)
class LanguageModeling(Task):
    """Next-token prediction: inputs are token ids ``(B, T)``, targets the ids one step later."""

    name: str = "language-modeling"

    def logits(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(input_ids=inputs, use_cache=False).logits

    def summary(self, totals: Totals) -> dict[str, float]:
        """Mean loss per token and its perplexity; ``accuracy`` is next-token accuracy, so reports
        written for classifiers still read. ``examples`` counts sequences (federated weights)."""
        if totals.predictions == 0:
            return {"accuracy": float("nan"), "loss": float("nan"), PERPLEXITY: float("nan"), "examples": 0.0,
                    "tokens": 0.0}
        loss = totals.loss / totals.predictions
        return {"accuracy": totals.correct / totals.predictions, "loss": loss, PERPLEXITY: math.exp(min(loss, _LARGEST_EXPONENT)),
                "examples": float(totals.examples), "tokens": float(totals.predictions)}


CLASSIFICATION = ImageClassification()
LANGUAGE_MODELING = LanguageModeling()

"""Knowledge distillation after pruning: the unpruned model teaches its pruned copy.

Fine-tuning a pruned model on hard labels alone relearns from a few hundred of a
user's images; the unpruned model knows more than those labels say (how alike
the classes look to it). Hinton et al. (2015) pass that on with soft targets:
the student matches the teacher's temperature-softened distribution (KL
divergence, scaled by T^2 so its gradients keep their size as T grows), mixed
with the usual cross-entropy on the labels. Pruning masks stay enforced after
every step, so the student keeps its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedhei.training.loops import ArrayBatches, Masks, Objective, TrainSettings, train


@dataclass(frozen=True)
class DistillSettings:
    """A scenario's ``distill_settings()`` builds it from its checked ``distill-*`` settings."""

    # Softens both distributions; higher shows more of the teacher's view of wrong classes.
    temperature: float
    # Weight of the teacher's soft targets; the labels' cross-entropy gets 1 - alpha.
    alpha: float


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, settings: DistillSettings
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)."""
    temperature = settings.temperature
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return settings.alpha * soft + (1 - settings.alpha) * hard


@torch.no_grad()
def teacher_divergence(
    student: nn.Module, teacher: nn.Module, data: ArrayBatches, temperature: float = 1.0, batch_size: int = 256
) -> float:
    """Mean KL divergence from the teacher's to the student's predictions at ``temperature``: how far the student strays."""
    device = next(student.parameters()).device
    student.eval()
    teacher.to(device).eval()
    total, count = 0.0, 0
    for images, _ in data.batches(batch_size):
        images = images.to(device)
        total += F.kl_div(F.log_softmax(student(images) / temperature, dim=1),
                          F.log_softmax(teacher(images) / temperature, dim=1), reduction="sum", log_target=True).item()
        count += len(images)
    return total / count if count else float("nan")


def objective(teacher: nn.Module, distillation: DistillSettings) -> Objective:
    """The loss :func:`fedhei.training.loops.train` minimizes to distill from ``teacher`` (frozen, in eval mode)."""
    teacher.eval()

    def loss(student: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher.to(images.device)(images)
        return distillation_loss(student(images), teacher_logits, labels, distillation)

    return loss


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: ArrayBatches,
    settings: TrainSettings,
    distillation: DistillSettings,
    masks: Masks | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Train ``student`` against ``teacher`` and the labels, as local training does (AdamW, cosine, masks kept).

    The teacher may have other shapes (a structurally pruned student learns from its
    unpruned original); it only has to give logits for the same classes.
    """
    return train(student, data, settings, masks, seed=seed, device=device, objective=objective(teacher, distillation))

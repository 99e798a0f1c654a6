"""A client's accuracy on the whole test set, per class weighted by its own label proportions.

A client's sampled test split (``test-ratio`` times its shard, a few hundred images or
fewer) estimates its expected accuracy under its label mix with several points of
sampling error. The same expectation has an exact value: the model's accuracy on every
test image of each class, weighted by the share of that class in the client's training
shard. Classes the client does not hold weigh nothing and are not evaluated, which
keeps the cost at a fraction of the test set for skewed clients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from fedhei.data.cifar10 import Split, load_cifar10_cached
from fedhei.training.loops import FLOAT32, batches_for, correct_per_example


@dataclass(frozen=True)
class WeightedAccuracy:
    accuracy: float
    # Label proportions of the training shard, over every class of the test set.
    weights: np.ndarray
    # Accuracy on all test images of each class with a nonzero weight.
    per_class: dict[int, float]
    images: int

    def metrics(self) -> dict[str, float]:
        """The figures a manifest and results.json keep, beside the sampled split's."""
        return {
            "accuracy-weighted": self.accuracy,
            # Always guessing the client's most common class, measured the same way.
            "majority-class-rate-weighted": float(self.weights.max()),
            "weighted-test-examples": float(self.images),
        }


def label_proportions(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


def label_weighted_accuracy(
    model: nn.Module, test: Split, train_labels: np.ndarray, batch_size: int = 256, precision: str = FLOAT32
) -> WeightedAccuracy:
    """Sum over the client's classes of (its share of the class) x (accuracy on the class's test images),
    with the forward pass at ``precision``.

    A class the client holds but the test set lacks (only in a custom source) cannot be
    measured; the remaining weights are renormalized.
    """
    num_classes = int(max(test.labels.max(), np.max(train_labels))) + 1
    weights = label_proportions(train_labels, num_classes)
    present = np.bincount(test.labels, minlength=num_classes) > 0
    classes = np.flatnonzero((weights > 0) & present)
    indices = np.flatnonzero(np.isin(test.labels, classes))
    hits = correct_per_example(model, batches_for(model, test, indices), batch_size, precision)
    labels = test.labels[indices]
    per_class = {int(label): float(hits[labels == label].mean()) for label in classes}
    kept = weights[classes] / weights[classes].sum()
    accuracy = float(sum(share * per_class[int(label)] for share, label in zip(kept, classes, strict=True)))
    return WeightedAccuracy(accuracy, weights, per_class, len(indices))


def weighted_metrics(model: nn.Module, data_source: str, train_labels: np.ndarray, precision: str) -> dict[str, float]:
    """:func:`label_weighted_accuracy` on the run's own test set, as metrics."""
    test = load_cifar10_cached(data_source or None).test
    return label_weighted_accuracy(model, test, train_labels, precision=precision).metrics()

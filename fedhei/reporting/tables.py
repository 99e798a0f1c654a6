"""Tables and figures for people: terminal tables (rich) and PNG plots (matplotlib)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fedhei import atomic
from fedhei.data.cifar10 import CLASSES
from fedhei.data.partition import Partition, majority_class_rate

# Wide when piped: a table cut at 80 columns is useless in a log.
stdout = Console() if sys.stdout.isatty() else Console(width=200)


def label_table(partition: Partition, test_labels: np.ndarray, title: str) -> None:
    """Per-client sizes and label histograms, the first thing to look at in a non-IID split."""
    table = Table(title=title)
    table.add_column("client", justify="right")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    for name in CLASSES:
        table.add_column(name[:5], justify="right")
    table.add_column("majority", justify="right")
    for client, counts in enumerate(partition.label_counts):
        test = test_labels[partition.test_indices[client]]
        table.add_row(
            str(client),
            str(int(counts.sum())),
            str(len(test)),
            *(str(int(count)) for count in counts),
            f"{majority_class_rate(test):.2f}",
        )
    table.caption = f"public slice: {len(partition.public_indices)} images held out from all clients"
    stdout.print(table)


def plot_label_distribution(partition: Partition, path: Path) -> None:
    """A stacked bar per client, one colour per class, written atomically as PNG."""
    from matplotlib.figure import Figure

    from fedhei.reporting.figures import draw_label_counts

    counts = partition.label_counts
    figure = Figure(figsize=(max(6.0, 0.35 * len(counts) + 2), 4))
    axis = figure.subplots()
    draw_label_counts(axis, counts, CLASSES)
    axis.set_title(f"{partition.spec.kind.value} split over {len(counts)} clients")
    figure.tight_layout()
    atomic.write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))

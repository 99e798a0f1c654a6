"""Evaluation precision: does a bfloat16 forward pass score what float32 scores, and how much faster is it?

The same models are evaluated on the whole CIFAR-10 test set in float32 and in bfloat16
(autocast, as ``eval-precision`` does): the scenario's base model, and the base fine-tuned
for ``--steps`` steps on each of ``--clients``' training shards of the scenario's partition
(personalized models, each skewed to its own labels). Per model: both accuracies and the
difference; over all models: the paired mean difference, bfloat16 minus float32, with its
95% interval from the project's two-stage bootstrap (models, then test images; each unit
is one image's 0/1 correctness difference). The verdict says whether the interval stays
within ``--tolerance`` points, the bar for bfloat16 to be the default.

Speed: the forward pass of the base model on the same test batches, float32 and bfloat16
alternating batch by batch in this process (which order goes first alternates too), at
each of ``--threads``; the ratio stays fair when other work shares the machine. The
accuracy passes above (data conversion included, alternating model by model) give a
second, whole-evaluation ratio.

    python benchmarks/eval_precision.py scenarios/quickstart.toml [--clients 0,1,2,3] [--steps 40] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from rich.table import Table
from torch import nn

from fedhei import seeding
from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import Scenario, load_scenario
from fedhei.data.cifar10 import Cifar10, load_cifar10_cached
from fedhei.data.partition import make_partition
from fedhei.errors import FedheiError
from fedhei.federation.server import scenario_base_model
from fedhei.reporting.intervals import Interval, bootstrap
from fedhei.reporting.tables import stdout
from fedhei.training.device import pick_device
from fedhei.training.loops import (
    BFLOAT16,
    EVAL_PRECISIONS,
    FLOAT32,
    batches_for,
    correct_per_example,
    eval_precision,
    train,
)

# An evaluation's batch size everywhere in fedhei (clients, export, the server's global evaluation).
EVAL_BATCH = 256


@dataclass(frozen=True)
class ModelFigures:
    name: str
    # Per test image, 1.0 where the top prediction is right, at each precision.
    correct: dict[str, np.ndarray]
    # Seconds each precision's whole-test-set pass took.
    seconds: dict[str, float]

    @property
    def differences(self) -> np.ndarray:
        return self.correct[BFLOAT16] - self.correct[FLOAT32]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--clients", default="0,1,2,3", help="clients whose shards the base is fine-tuned on, one model each")
    parser.add_argument("--steps", type=int, default=40, help="fine-tuning steps per client model")
    parser.add_argument("--threads", default="1,2", help="torch threads of the speed measurement; the first also runs the rest")
    parser.add_argument("--speed-batches", type=int, default=8, help=f"test batches of {EVAL_BATCH} the speed measurement times")
    parser.add_argument("--repeats", type=int, default=3, help="passes over those batches per precision and thread count")
    parser.add_argument("--tolerance", type=float, default=0.1, help="points the paired interval must stay within")
    args = parser.parse_args(argv)
    args.client_ids = [int(part) for part in args.clients.split(",") if part.strip()]
    args.thread_counts = [int(part) for part in args.threads.split(",") if part.strip()]
    if not args.thread_counts or min(args.thread_counts) < 1:
        parser.error(f"--threads {args.threads!r}: give thread counts of at least 1, e.g. 1,2")
    return args


def personalized(base: nn.Module, scenario: Scenario, data: Cifar10, shard: np.ndarray, client: int, steps: int) -> nn.Module:
    """The base fine-tuned for ``steps`` steps on this client's shard, with the scenario's optimizer and rate."""
    model = copy.deepcopy(base)
    settings = replace(scenario.finetune_settings(), epochs=steps * scenario.batch_size / len(shard) + 1, max_steps=steps)
    train(model, batches_for(model, data.train, shard), settings, seed=seeding.seed_for(scenario.seed, "eval-precision", client))
    return model


def measure(name: str, model: nn.Module, data: Cifar10) -> ModelFigures:
    """The model on the whole test set at both precisions, each pass timed."""
    test = batches_for(model, data.test)
    correct, seconds = {}, {}
    for precision in EVAL_PRECISIONS:
        started = time.perf_counter()
        correct[precision] = correct_per_example(model, test, EVAL_BATCH, precision)
        seconds[precision] = time.perf_counter() - started
    return ModelFigures(name, correct, seconds)


@torch.no_grad()
def forward_speed(model: nn.Module, data: Cifar10, batches: int, repeats: int) -> dict[str, float]:
    """Images per second of the forward pass at each precision, alternating batch by batch."""
    device = next(model.parameters()).device
    model.eval()
    inputs = [images.to(device) for images, _ in batches_for(model, data.test).batches(EVAL_BATCH)][:batches]
    for precision in EVAL_PRECISIONS:  # oneDNN builds its kernels on first use: keep that out of the timing
        with eval_precision(device, precision):
            model(inputs[0])
    seconds = dict.fromkeys(EVAL_PRECISIONS, 0.0)
    for _ in range(repeats):
        for index, images in enumerate(inputs):
            for precision in EVAL_PRECISIONS if index % 2 == 0 else EVAL_PRECISIONS[::-1]:
                started = time.perf_counter()
                with eval_precision(device, precision):
                    model(images)
                seconds[precision] += time.perf_counter() - started
    images = repeats * sum(len(batch) for batch in inputs)
    return {precision: images / spent for precision, spent in seconds.items()}


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def accuracy_table(rows: Sequence[ModelFigures], difference: Interval, tolerance: float) -> Table:
    images = len(rows[0].differences)
    table = Table(title=f"bfloat16 against float32 evaluation: the same {len(rows)} models, {images:,} CIFAR-10 test images")
    for column in ("model", "float32", "bfloat16", "difference (points)", "images changed"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row.name, f"{100 * row.correct[FLOAT32].mean():.2f}%", f"{100 * row.correct[BFLOAT16].mean():.2f}%",
                      points(row.differences.mean()), f"{int(np.count_nonzero(row.differences))}")
    within = -tolerance / 100 <= difference.low and difference.high <= tolerance / 100
    table.caption = (f"paired mean difference, bfloat16 - float32, over {len(rows)} models x {images:,} images: "
                     f"{points(difference.estimate)} points, 95% interval [{points(difference.low)}, {points(difference.high)}] "
                     f"(two-stage bootstrap: models, then images). Within ±{tolerance:g} points: {'yes' if within else 'no'}.")
    return table


def speed_table(speeds: dict[int, dict[str, float]], rows: Sequence[ModelFigures], threads: int, images: int) -> Table:
    table = Table(title="evaluation speed, images/s")
    for column in ("what is timed", "threads", "float32", "bfloat16", "bfloat16 / float32"):
        table.add_column(column, justify="right")
    for count, speed in speeds.items():
        table.add_row(f"forward pass, {EVAL_BATCH} a batch, alternating batch by batch", str(count), f"{speed[FLOAT32]:,.0f}",
                      f"{speed[BFLOAT16]:,.0f}", f"{speed[BFLOAT16] / speed[FLOAT32]:.2f}")
    whole = {precision: len(rows) * images / sum(row.seconds[precision] for row in rows) for precision in EVAL_PRECISIONS}
    table.add_row("whole test set, data conversion included, alternating model by model", str(threads),
                  f"{whole[FLOAT32]:,.0f}", f"{whole[BFLOAT16]:,.0f}", f"{whole[BFLOAT16] / whole[FLOAT32]:.2f}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.thread_counts[0])
    started = time.perf_counter()
    try:
        scenario = load_scenario(args.scenario, args.overrides, args.data)
        if scenario.is_language_model:
            raise FedheiError(f"{scenario.model} is a language model; this benchmark evaluates image models on CIFAR-10")
        data = load_cifar10_cached(scenario.data_source or None)
        shards = make_partition(data.train.labels, data.test.labels, scenario.partition_spec()).train_indices
        outside = [client for client in args.client_ids if not 0 <= client < len(shards)]
        if outside:
            raise FedheiError(f"--clients {args.clients}: {outside} outside 0..{len(shards) - 1}, the scenario's clients")
        base = scenario_base_model(scenario)
        base.to(pick_device(scenario.device))
        models = [("base", base)] + [(f"client {client}, +{args.steps} steps",
                                      personalized(base, scenario, data, shards[client], client, args.steps))
                                     for client in args.client_ids]
    except FedheiError as error:
        print(f"eval_precision: error: {error}", file=sys.stderr)
        return 2
    rows = [measure(name, model, data) for name, model in models]
    difference = bootstrap([row.differences for row in rows])
    speeds = {}
    for count in args.thread_counts:
        torch.set_num_threads(count)
        speeds[count] = forward_speed(base, data, args.speed_batches, args.repeats)
    stdout.print(accuracy_table(rows, difference, args.tolerance))
    stdout.print(speed_table(speeds, rows, args.thread_counts[0], len(data.test)))
    stdout.print(f"({time.perf_counter() - started:.0f} s in all, torch {torch.__version__})", markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

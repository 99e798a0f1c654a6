"""What one FedHEI client uploads at each upload precision, and what its exported file weighs.

Bytes do not depend on training, only on the roles and the pruning ratios, so this
builds the real update (``fedhei.federation.wire.encode``, wrapped in the Flower
``ArrayRecord`` that the strategy counts) and the real sparse export for a model at
``--prob``, with the ``--personalized`` fraction of its linear layers personalized,
at every step of the pruning schedule. Which layers are personalized moves the figures,
so it prints both extremes, the smallest layers personalized (the most is shared)
and the largest, then the int8 share over random role sets. FedAvg's upload is the
same model dense in float32.

    python benchmarks/wire_bytes.py --model vit-tiny-c10 --prob 0.5 --personalized 0.25 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord
from rich.table import Table
from torch import nn

from fedhei.config.precision import Precision
from fedhei.federation.policy import ClientPolicy, Pruning, Sharing, personal_parameters
from fedhei.federation.wire import encode
from fedhei.method.pruning import compression, cubic_ratio, layer_ratios, magnitude_masks
from fedhei.method.roles import GENERIC, PERSONALIZED, RoleMap
from fedhei.models.checkpoints import dense_file_bytes, save_sparse
from fedhei.models.registry import create_model, linear_layers
from fedhei.reporting.tables import stdout
from fedhei.seeding import rng, torch_seeded
from fedhei.training.loops import apply_masks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit-tiny-c10")
    parser.add_argument("--prob", type=float, default=0.5)
    parser.add_argument("--personal-factor", type=float, default=0.5)
    parser.add_argument("--personalized", type=float, default=0.25, help="fraction of linear layers personalized (rounded up)")
    parser.add_argument("--steps", type=int, default=3, help="pruning steps of the cubic schedule")
    parser.add_argument("--random-roles", type=int, default=20, help="random role sets drawn for the int8 summary")
    return parser.parse_args(argv)


def record_bytes(arrays: dict[str, np.ndarray]) -> int:
    """What the strategy counts: ``ArrayRecord.count_bytes()`` of the reply's arrays."""
    return ArrayRecord({name: Array(np.ascontiguousarray(value)) for name, value in arrays.items()}).count_bytes()


def measure(args: argparse.Namespace, model: nn.Module, personal_layers: set[str], step: int) -> dict[str, float]:
    """Upload bytes per precision and sparse-file bytes for one role set at one pruning step."""
    names = [layer.name for layer in linear_layers(model)]
    params = {name: value.detach().numpy().copy() for name, value in model.named_parameters()}
    roles = RoleMap(tuple(names), tuple(0.0 for _ in names), "top-fraction", args.personalized,
                    {name: PERSONALIZED if name in personal_layers else GENERIC for name in names})
    targets = layer_ratios(roles, args.prob, args.personal_factor)
    personal = personal_parameters(ClientPolicy(Sharing.GENERIC, Pruning.ROLES), params, personal_layers)
    pruned = copy.deepcopy(model)
    masks = magnitude_masks(pruned, {name: cubic_ratio(ratio, step, args.steps) for name, ratio in targets.items()})
    apply_masks(pruned, masks)
    shared = {name: value for name, value in params.items() if name not in personal}
    shared_masks = {name: masks[name].numpy() for name in shared if name in masks}
    result: dict[str, float] = {
        precision.value: record_bytes(encode(shared, shared_masks, precision, reference=params)) for precision in Precision
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_sparse(pruned, path, {"model": args.model})
        result["file"] = path.stat().st_size
    result["dense-file"] = dense_file_bytes(pruned, {"model": args.model})
    result["linear-compression"] = compression(pruned, masks)["linear-compression"]
    linear_param_bytes = 4 * sum(layer.params for layer in linear_layers(model))
    result["file-bound"] = result["dense-file"] - (result["linear-compression"] - 0.04) * linear_param_bytes
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with torch_seeded(0, "benchmark-wire-bytes"):
        model = create_model(args.model)
    fedavg = record_bytes({name: value.detach().numpy() for name, value in model.named_parameters()})
    layers = sorted(linear_layers(model), key=lambda layer: layer.params)
    names = [layer.name for layer in linear_layers(model)]
    count = math.ceil(args.personalized * len(layers) - 1e-9)
    table = Table(title=f"{args.model}, prob {args.prob}, {count} of {len(names)} linear layers personalized; "
                        f"FedAvg uploads {fedavg:,} B per client (dense float32, as ArrayRecord counts it)")
    for column in ("personalized layers", "step", "generic ratio", "float32 B", "float16 B", "int8 B", "int8 / FedAvg",
                   "file B (sparse)", "file B (dense)", "linear compression", "file bound B"):
        table.add_column(column, justify="right")
    extremes = {"smallest": {layer.name for layer in layers[:count]}, "largest": {layer.name for layer in layers[-count:]}}
    for label, personal_layers in extremes.items():
        for step in range(1, args.steps + 1):
            row = measure(args, model, personal_layers, step)
            table.add_row(label, str(step), f"{cubic_ratio(args.prob, step, args.steps):.3f}",
                          *(f"{int(row[precision.value]):,}" for precision in Precision),
                          f"{100 * row['int8'] / fedavg:.1f}%", f"{int(row['file']):,}", f"{int(row['dense-file']):,}",
                          f"{100 * row['linear-compression']:.1f}%", f"{row['file-bound']:,.0f}")
    stdout.print(table)
    stdout.print("file bound = dense file - (linear compression - 4%) x the linear layers' parameter bytes")
    draws = rng(0, "benchmark-wire-bytes-roles")
    for step in range(1, args.steps + 1):
        shares = [measure(args, model, set(draws.choice(names, size=count, replace=False)), step)["int8"] / fedavg
                  for _ in range(args.random_roles)]
        stdout.print(f"step {step}: int8 / FedAvg over {args.random_roles} random role sets: mean {100 * np.mean(shares):.1f}%, "
                     f"min {100 * min(shares):.1f}%, max {100 * max(shares):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

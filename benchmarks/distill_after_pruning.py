"""Does distillation from the unpruned model recover more accuracy after pruning than labels alone?

Runs ``fedhei compress`` for each user (client x seed) twice, with the same base,
data, fine-tuning, scoring and pruning, once recovering on labels alone and once
with ``--distill``, then pairs every configuration (prob, roles, schedule,
pruning) of the two runs. The paired difference is averaged per user first (a
user's configurations share its data, so they are not independent), and the
interval is a t interval over users.

    OMP_NUM_THREADS=1 python benchmarks/distill_after_pruning.py --base base.safetensors \\
        --users 3,10,15 --seeds 0,1 -- --prob 0.5,0.7 --pruning-steps 1 --structured

Everything after ``--`` goes to every ``fedhei compress`` call unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from scipy import stats

from fedhei import atomic
from fedhei.cli import main as fedhei
from fedhei.reporting.tables import stdout

PAIR_KEY = ("prob", "method", "schedule", "pruning")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base-model checkpoint (the same for every user)")
    parser.add_argument("--users", default="3,10,15", help="client ids of the partition, comma separated")
    parser.add_argument("--seeds", default="0,1", help="seeds (each a new partition and training order), comma separated")
    parser.add_argument("--out-dir", type=Path, default=Path("runs") / "distill", help="compress reports and the summary")
    return parser.parse_args(argv[:split]), argv[split + 1 :]


def _compress(args: argparse.Namespace, passthrough: list[str], client: int, seed: int, distill: bool) -> dict[str, Any]:
    out = args.out_dir / f"client{client}-seed{seed}-{'distill' if distill else 'labels'}.json"
    if not out.is_file():
        code = fedhei(["compress", "--base", str(args.base), "--client", str(client), "--seed", str(seed),
                       "--out", str(out), *passthrough, *(["--distill"] if distill else [])])
        if code != 0:
            raise SystemExit(code)
    return json.loads(out.read_text())


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t interval (NaN bounds for a single value)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    if np.ptp(values) == 0:
        return mean, mean, mean
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(argv)
    users = [(int(client), int(seed)) for seed in args.seeds.split(",") for client in args.users.split(",")]
    # group (prob, pruning) -> user -> paired differences of that user's configurations
    differences: dict[tuple[float, str], dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    accuracy: dict[tuple[float, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    size: dict[tuple[float, str], list[float]] = defaultdict(list)
    for client, seed in users:
        labels = _compress(args, passthrough, client, seed, distill=False)
        distilled = _compress(args, passthrough, client, seed, distill=True)
        rows = {tuple(row[key] for key in PAIR_KEY): row for row in distilled["results"]}
        for row in labels["results"]:
            pair = rows[tuple(row[key] for key in PAIR_KEY)]
            group = (row["prob"], row["pruning"])
            differences[group][(client, seed)].append(pair["accuracy-after"] - row["accuracy-after"])
            accuracy[group]["labels"].append(row["accuracy-after"])
            accuracy[group]["distill"].append(pair["accuracy-after"])
            size[group].append(row["compression"])

    table = Table(title=f"recovery by distillation against labels alone, {len(users)} users, the same pruning in each pair")
    for column in ("prob", "pruning", "removed", "pairs", "acc, labels", "acc, distill", "distill - labels (95% CI over users)",
                   "users better / worse"):
        table.add_column(column, justify="left" if column == "pruning" else "right")
    summary = []
    for group in sorted(differences):
        per_user = [float(np.mean(values)) for values in differences[group].values()]
        mean, low, high = _interval(per_user)
        better, worse = sum(value > 0 for value in per_user), sum(value < 0 for value in per_user)
        pairs = sum(len(values) for values in differences[group].values())
        summary.append({"prob": group[0], "pruning": group[1], "removed": float(np.mean(size[group])), "pairs": pairs,
                        "accuracy-labels": float(np.mean(accuracy[group]["labels"])),
                        "accuracy-distill": float(np.mean(accuracy[group]["distill"])),
                        "difference": mean, "interval": [low, high], "users-better": better, "users-worse": worse,
                        "per-user": per_user})
        table.add_row(f"{group[0]:g}", group[1], f"{np.mean(size[group]):.1%}", str(pairs),
                      f"{np.mean(accuracy[group]['labels']):.1%}", f"{np.mean(accuracy[group]['distill']):.1%}",
                      f"{100 * mean:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}] pts", f"{better} / {worse}")
    atomic.write_json(args.out_dir / "summary.json", {"users": users, "compress": passthrough, "groups": summary})
    stdout.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

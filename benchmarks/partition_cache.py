"""What a worker pays for its split before its first round: computed in a fresh process, and read from the cache.

Every worker of a simulation builds the scenario's split once. Computed, that means
importing flwr-datasets (which imports pandas, matplotlib and seaborn) and running its
partitioner; cached, it is one ``.npz`` of index arrays. Each side runs ``--repeats``
times in a fresh Python process, as a worker starts, over a cache root of its own that
shares the decoded data set with the user's cache (so neither side decodes images),
empty of splits for the first side and holding the split for the second. The time is
the split alone, its imports included; the data set is loaded before the clock starts.

    python benchmarks/partition_cache.py scenarios/quickstart.toml [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from fedhei.cache import CACHE_ENV, cache_dir
from fedhei.cli.main import scenario_arguments
from fedhei.config.scenario import load_scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.errors import FedheiError
from fedhei.reporting.tables import stdout

# Run in the child: load the data set, then time the split with the imports it needs.
CHILD = """
import json, sys, time
from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
scenario = Scenario.from_mapping(json.loads(sys.argv[1]))
data = load_cifar10_cached(scenario.data_source or None)
started = time.perf_counter()
from fedhei.data.partition import make_partition
make_partition(data.train.labels, data.test.labels, scenario.partition_spec())
print(json.dumps({"seconds": time.perf_counter() - started, "flwr-datasets imported": "flwr_datasets" in sys.modules}))
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scenario_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per side")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats is {args.repeats}; give at least 1")
    return args


def child_split(mapping: dict[str, object], root: Path) -> dict[str, float | bool]:
    """One fresh process's split time over the cache root ``root``."""
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(mapping)], capture_output=True, text=True, check=True,
                            env={**os.environ, CACHE_ENV: str(root)})
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scenario = load_scenario(args.scenario, args.overrides, args.data)
        if scenario.is_language_model:
            raise FedheiError(f"{scenario.model} is a language model; its clients split no image set")
        load_cifar10_cached(scenario.data_source or None)
    except FedheiError as error:
        print(f"partition_cache: error: {error}", file=sys.stderr)
        return 2
    mapping = scenario.to_mapping()
    root = Path(tempfile.mkdtemp(prefix="fedhei-partition-cache-"))
    try:
        decoded = cache_dir() / "cifar10"
        if decoded.is_dir():
            (root / "cifar10").symlink_to(decoded)
        sides: dict[str, list[dict[str, float | bool]]] = {"computed (no split cached)": [], "read from the cache": []}
        for _ in range(args.repeats):
            shutil.rmtree(root / "partitions", ignore_errors=True)
            sides["computed (no split cached)"].append(child_split(mapping, root))
            sides["read from the cache"].append(child_split(mapping, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = Table(title=f"{scenario.name}: one worker's split ({scenario.num_clients} clients, {scenario.partition}), "
                        f"{args.repeats} fresh processes per side")
    for column in ("side", "median s", "min s", "max s", "flwr-datasets imported"):
        table.add_column(column)
    for side, runs in sides.items():
        seconds = [float(run["seconds"]) for run in runs]
        table.add_row(side, f"{statistics.median(seconds):.3f}", f"{min(seconds):.3f}", f"{max(seconds):.3f}",
                      "yes" if all(run["flwr-datasets imported"] for run in runs) else "no")
    stdout.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

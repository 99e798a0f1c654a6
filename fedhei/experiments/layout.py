"""Where the runs of a scenario go: one directory per run, one more level per seed when seeds are given; and where
their clients keep state, which the server and the clients must agree on."""

from __future__ import annotations

from pathlib import Path

from fedhei.config.scenario import Scenario


def state_root(scenario: Scenario, run_dir: Path) -> Path:
    """Where the clients keep their state on disk: ``state-dir``, else the run directory's ``state/``."""
    return Path(scenario.state_dir) if scenario.state_dir else run_dir / "state"


def seed_dir(run_dir: Path, seed: int) -> Path:
    return run_dir / f"seed-{seed}"


def seed_runs(scenario: Scenario, run_dir: Path) -> list[tuple[Scenario, Path]]:
    """(single-seed scenario, run directory) for each seed: ``run_dir/seed-<s>`` with ``seeds``, else ``run_dir``."""
    if not scenario.seeds:
        return [(scenario, run_dir)]
    return [(scenario.for_seed(seed), seed_dir(run_dir, seed)) for seed in scenario.run_seeds()]

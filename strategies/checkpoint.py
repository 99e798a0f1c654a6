"""The server's checkpoint: what a killed run needs to go on from its last complete round.

One safetensors file in the run directory, replaced atomically after every round:
the global arrays and the server optimizer's state as tensors, and as JSON in its header the strategy's state
(round logs, who has trained, the consensus layer set), the run token that names
the clients' state on disk, and the scenario the run was started with. Sampling
needs no state of its own: it is a named seed stream of (seed, round).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from fedhei import atomic
from fedhei.errors import FedheiError

CHECKPOINT_FILE = "checkpoint.safetensors"
_HEADER_KEY = "fedhei-checkpoint"
_FORMAT = 1
_OPTIMIZER_PREFIX = "server-optimizer::"


@dataclass(frozen=True)
class ServerCheckpoint:
    completed_round: int
    run_token: str
    scenario: dict[str, Any]
    strategy_state: dict[str, Any]
    arrays: dict[str, np.ndarray]
    # The server optimizer's state (ServerStep.state_arrays), stored beside the arrays under a prefix.
    optimizer: dict[str, np.ndarray]

    def save(self, run_dir: Path) -> None:
        header = {
            "format": _FORMAT,
            "completed-round": self.completed_round,
            "run-token": self.run_token,
            "scenario": self.scenario,
            "strategy-state": self.strategy_state,
        }
        tensors = {name: np.ascontiguousarray(value) for name, value in self.arrays.items()}
        tensors.update({f"{_OPTIMIZER_PREFIX}{name}": np.ascontiguousarray(value) for name, value in self.optimizer.items()})
        metadata = {_HEADER_KEY: json.dumps(header)}
        atomic.write_with(run_dir / CHECKPOINT_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), suffix=".safetensors")

    @classmethod
    def load(cls, run_dir: Path) -> ServerCheckpoint:
        path = run_dir / CHECKPOINT_FILE
        if not path.is_file():
            raise FedheiError(f"{run_dir} holds no checkpoint ({CHECKPOINT_FILE}); give the run directory of a run that "
                              "completed at least one round")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                header = json.loads((handle.metadata() or {})[_HEADER_KEY])
            tensors = load_file(str(path))
            arrays = {name: value for name, value in tensors.items() if not name.startswith(_OPTIMIZER_PREFIX)}
            optimizer = {name.removeprefix(_OPTIMIZER_PREFIX): value for name, value in tensors.items()
                         if name.startswith(_OPTIMIZER_PREFIX)}
            checkpoint = cls(int(header["completed-round"]), str(header["run-token"]), dict(header["scenario"]),
                             dict(header["strategy-state"]), arrays, optimizer)
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
            raise FedheiError(f"{path} is not a readable fedhei checkpoint ({type(error).__name__}); start the run afresh "
                              "without --resume") from error
        if header.get("format") != _FORMAT:
            raise FedheiError(f"{path} has checkpoint format {header.get('format')}, this fedhei reads {_FORMAT}")
        return checkpoint

    def check_scenario(self, scenario: Mapping[str, Any]) -> None:
        """A run resumes only with the settings it was started with."""
        changed = sorted(key for key in set(scenario) | set(self.scenario) if scenario.get(key) != self.scenario.get(key))
        if changed:
            shown = ", ".join(f"{key} ({self.scenario.get(key)!r} -> {scenario.get(key)!r})" for key in changed[:3])
            raise FedheiError(f"the scenario differs from the one this run was started with: {shown}; resume with the "
                              "same scenario and --set values, or start a new run")

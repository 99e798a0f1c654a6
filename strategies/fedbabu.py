"""FedBABU (Oh et al. 2022): only the body federates; the head stays at its random initialization until each
client fine-tunes it before the final evaluation."""

from __future__ import annotations

from typing import Any

from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedhei.federation.algorithms.fedbabu import FedBABUTraining, initial_head
from fedhei.federation.policy import ClientPolicy, Sharing
from strategies.base import PersonalizedStrategy


class FedBABU(PersonalizedStrategy):
    name = "fedbabu"
    policy = ClientPolicy(sharing=Sharing.BODY, algorithm=FedBABUTraining.name)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, *args: Any, **kwargs: Any) -> Result:
        """A fresh run replaces the base model's head by a random one; a resumed run has it in its checkpoint."""
        if self.completed_round == 0:
            head = {name: Array(value) for name, value in initial_head(self.scenario.model, self.scenario.seed).items()}
            initial_arrays = ArrayRecord({name: head.get(name, initial_arrays[name]) for name in initial_arrays.keys()})
        return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)

"""The optimizers of federated training: the clients' learning rate over the rounds, and the server's step.

Federated optimization has two optimizers (Reddi et al. 2021, "Adaptive Federated
Optimization"): each client runs local SGD or AdamW in a round, and the server treats
the average of the clients' models as a pseudo-gradient and takes a step of its own
with it: plain averaging (FedAvg), momentum (FedAvgM, Hsu et al. 2019), Adam or Yogi.
The server steps follow Flower's own ``FedAvgM``, ``FedAdam`` and ``FedYogi`` formula
for formula (a test checks them against Flower's on the same replies), with one
addition that masked, personalized federations need: a weight that no client kept
this round moves neither in value nor in optimizer state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from fedhei.errors import FedheiError

Arrays = dict[str, np.ndarray]

# Client optimizers a scenario can name (``client-optimizer``).
SGD, ADAMW = "sgd", "adamw"
CLIENT_OPTIMIZERS = (SGD, ADAMW)


class LrSchedule(StrEnum):
    """How the clients' learning rate moves from round to round (``lr-schedule``)."""

    CONSTANT = "constant"
    COSINE = "cosine"  # from lr in round 1 towards 0 after the last round
    EXPONENTIAL = "exponential"  # lr * lr-decay ** (round - 1)


def round_lr(lr: float, schedule: LrSchedule, decay: float, server_round: int, num_rounds: int) -> float:
    """The clients' learning rate in ``server_round`` (1-based) of ``num_rounds``."""
    progress = (server_round - 1) / max(1, num_rounds)
    factors = {
        LrSchedule.CONSTANT: 1.0,
        LrSchedule.COSINE: 0.5 * (1.0 + math.cos(math.pi * progress)),
        LrSchedule.EXPONENTIAL: decay ** (server_round - 1),
    }
    return lr * factors[schedule]


class ServerOptimizer(StrEnum):
    """The server's step with the clients' average (``server-optimizer``)."""

    AVG = "avg"
    AVGM = "avgm"
    ADAM = "adam"
    YOGI = "yogi"


@dataclass(frozen=True)
class ServerSettings:
    """The server's step; a scenario's ``server_settings()`` builds it from its checked ``server-*`` settings."""

    kind: ServerOptimizer
    lr: float
    momentum: float
    beta1: float
    beta2: float
    tau: float


# The names of a tensor's optimizer state in a checkpoint: "<slot>/<parameter name>".
_SLOTS = {
    ServerOptimizer.AVG: (),
    ServerOptimizer.AVGM: ("momentum",),
    ServerOptimizer.ADAM: ("m", "v", "steps"),
    ServerOptimizer.YOGI: ("m", "v"),
}


class ServerStep:
    """The server optimizer and its state, per weight.

    ``step(current, average, counted)`` takes the masked average of the clients' models
    and ``counted`` (where at least one client kept the weight) and returns the new global
    model. Its state is plain arrays (:meth:`state_arrays`), so a checkpoint holds it and a
    resumed run goes on exactly.
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.state: dict[str, Arrays] = {slot: {} for slot in _SLOTS[settings.kind]}

    def step(self, current: Mapping[str, np.ndarray], average: Mapping[str, np.ndarray],
             counted: Mapping[str, np.ndarray]) -> Arrays:
        """The new global model; only tensors in ``counted`` (those some client sent) can move."""
        result = {name: np.array(value, copy=True) for name, value in current.items()}
        for name, kept in counted.items():
            if not kept.any():
                continue
            moved = self._moved(name, current[name], average[name], kept)
            result[name] = np.where(kept, moved, current[name]).astype(current[name].dtype)
        return result

    def _moved(self, name: str, old: np.ndarray, mean: np.ndarray, kept: np.ndarray) -> np.ndarray:
        settings = self.settings
        if settings.kind is ServerOptimizer.AVG:
            # A server rate of 1 is the clients' average itself, exactly.
            return mean if settings.lr == 1.0 else old + settings.lr * (mean - old)
        if settings.kind is ServerOptimizer.AVGM:
            # Flower's FedAvgM: v = momentum * v + (old - mean); new = old - lr * v.
            gradient = old - mean
            velocity = self._slot("momentum", name, old)
            velocity = np.where(kept, settings.momentum * velocity + gradient, velocity)
            self.state["momentum"][name] = velocity
            return old - settings.lr * velocity
        delta = mean - old
        m = self._slot("m", name, old)
        v = self._slot("v", name, old)
        m = np.where(kept, settings.beta1 * m + (1 - settings.beta1) * delta, m)
        if settings.kind is ServerOptimizer.ADAM:
            v = np.where(kept, settings.beta2 * v + (1 - settings.beta2) * delta**2, v)
            steps = self._slot("steps", name, old) + kept
            self.state["steps"][name] = steps
            # Flower's FedAdam corrects the rate for Adam's zero start with t = round + 1; here t counts
            # each weight's own steps (+ 1), which is the round whenever every client keeps it.
            rate = settings.lr * np.sqrt(1 - settings.beta2 ** (steps + 1.0)) / (1 - settings.beta1 ** (steps + 1.0))
        else:
            v = np.where(kept, v - (1 - settings.beta2) * delta**2 * np.sign(v - delta**2), v)
            rate = settings.lr
        self.state["m"][name], self.state["v"][name] = m, v
        return old + rate * m / (np.sqrt(v) + settings.tau)

    def _slot(self, slot: str, name: str, like: np.ndarray) -> np.ndarray:
        values = self.state[slot].get(name)
        return np.zeros_like(like, dtype=np.float64) if values is None else values

    def state_arrays(self) -> Arrays:
        """The optimizer's state as named arrays, for the checkpoint."""
        return {f"{slot}/{name}": values for slot, tensors in self.state.items() for name, values in sorted(tensors.items())}

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.state = {slot: {} for slot in _SLOTS[self.settings.kind]}
        for key, values in arrays.items():
            slot, _, name = key.partition("/")
            if slot not in self.state:
                raise FedheiError(f"the checkpoint holds server-optimizer state '{slot}', which server-optimizer "
                                  f"'{self.settings.kind.value}' does not keep; resume with the scenario it was started with")
            self.state[slot][name] = np.asarray(values, dtype=np.float64)

"""The server's side of a round without Flower: what each client gets, and the new global model.

The Flower strategy (``strategies/base.py``) and the plain in-process loop
(:mod:`fedhei.experiments.plain`) both hold a :class:`FederationServer`, so what a
client is sent and how the updates become the next global model are one piece of
code: the updates are decoded against the global model they were trained from,
averaged weight by weight over the clients whose masks keep them, and the server
optimizer (``server-optimizer``) takes its step with that average.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np
import torch

from fedhei.config.scenario import Scenario
from fedhei.data.cifar10 import load_cifar10_cached
from fedhei.errors import FedheiError
from fedhei.federation.policy import ClientPolicy, Sharing, download_parameters
from fedhei.federation.wire import DecodedTensor, kept_by_any, masked_average
from fedhei.models.registry import create_model
from fedhei.training.device import pick_device
from fedhei.training.loops import batches_for, evaluate
from fedhei.training.optimizers import ServerSettings, ServerStep
from fedhei.training.pretrain import starting_model

Arrays = dict[str, np.ndarray]
Updates = Sequence[tuple[float, Mapping[str, DecodedTensor]]]
# The global model's figures on the whole test set, per round (and for the base, round 0).
GLOBAL_ACCURACY, GLOBAL_LOSS = "global-accuracy", "global-loss"
# The aggregation rule proper: (current global arrays, weighted decoded updates) -> their average.
Combine = Callable[[Arrays, Updates], Arrays]


def scenario_base_model(scenario: Scenario) -> torch.nn.Module:
    """The scenario's base model, the federation's round 0: what its settings name, on its device."""
    return starting_model(scenario.pretrain_spec(), device=scenario.device, checkpoint=scenario.base_model,
                          data_source=scenario.data_source)


class FederationServer:
    """The global model, the server optimizer's state, and who has trained (what they need not be sent)."""

    def __init__(self, policy: ClientPolicy, initial: Mapping[str, np.ndarray], head: Collection[str],
                 settings: ServerSettings) -> None:
        self.policy = policy
        self.current: Arrays = {name: np.asarray(value) for name, value in initial.items()}
        self.names = list(initial)
        self.head = tuple(head)
        self.optimizer = ServerStep(settings)
        # Partitions whose update was aggregated once, with the personalized layers each reported last.
        self.participants: dict[int, tuple[str, ...]] = {}

    def download_names(self, client: int) -> list[str]:
        """What this client is sent: everything to a newcomer, only what it shares to one that has trained."""
        return download_parameters(self.policy, self.names, self.participants.get(client), self.head)

    def download(self, client: int) -> Arrays:
        return {name: self.current[name] for name in self.download_names(client)}

    def joined(self, client: int, personalized_layers: Sequence[str]) -> None:
        """Record an accepted update: the client now holds its own personal parameters."""
        self.participants[client] = tuple(personalized_layers)

    def aggregate(self, updates: Updates, combine: Combine = masked_average) -> Arrays:
        """The next global model from the round's updates (in partition order), and it becomes current."""
        average = combine(self.current, updates)
        self.current = self.optimizer.step(self.current, average, kept_by_any(self.current, updates))
        return self.current


def measures_global_model(policy: ClientPolicy, scenario: Scenario) -> bool:
    """Whether the run's global model is a model worth measuring on the whole test set.

    Only the strategies that share the whole model (FedAvg, FedAvg-FT, Ditto, FedALA) have
    one. The others' global model pairs an averaged part with a part that no one trained for
    it: FedPer, FedRep and FedBABU the base's (or a random) head, LG-FedAvg the base's body,
    and FedHEI the base's values in its personalized layers, under generic layers each client
    trained on top of its own personalized ones (measured in the calibration evidence: on
    Dirichlet(0.1) it falls from 45% to 21% where FedAvg on the same settings rises, and to
    35% with pruning nearly off). Local training shares nothing; a language model's clients
    hold topic text with no shared test set.
    """
    return policy.sharing is Sharing.ALL and not scenario.is_language_model


def evaluate_global(scenario: Scenario, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The global model's accuracy and loss on the whole CIFAR-10 test set (Flower's centralized evaluation)."""
    model = create_model(scenario.model)
    missing, unexpected = model.load_state_dict({name: torch.from_numpy(np.array(value, copy=True))
                                                 for name, value in arrays.items()}, strict=False)
    if unexpected or set(missing) & {name for name, _ in model.named_parameters()}:
        raise FedheiError(f"the global arrays do not fit {scenario.model}: missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]}")
    data = load_cifar10_cached(scenario.data_source or None)
    result = evaluate(model.to(pick_device(scenario.device)), batches_for(model, data.test), precision=scenario.eval_precision)
    return {GLOBAL_ACCURACY: result["accuracy"], GLOBAL_LOSS: result["loss"]}

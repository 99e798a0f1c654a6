"""What a strategy asks of its clients: which parameters they share, and how they prune.

The server strategy owns a :class:`ClientPolicy` and sends it with every round;
the client decides what it sends from it (as in Flower's FedRep baseline). Keeping
this in the core lets the client logic be tested without Flower.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fedhei.errors import FedheiError
from fedhei.federation.algorithms import algorithm_for
from fedhei.federation.algorithms.base import PLAIN
from fedhei.federation.algorithms.fedrep import FEDREP


class Sharing(StrEnum):
    """Which parameters leave the client."""

    ALL = "all"  # FedAvg: the whole model
    BODY = "body"  # FedPer, FedRep: everything but the classifier head
    HEAD = "head"  # LG-FedAvg: only the head; the representation stays local
    NONE = "none"  # local training only
    GENERIC = "generic"  # FedHEI: the generic linear layers and the non-linear parameters


class Pruning(StrEnum):
    NONE = "none"
    ROLES = "roles"  # HEI: ratio by layer role
    UNIFORM = "uniform"  # every linear layer at the same ratio, no roles


@dataclass(frozen=True)
class ClientPolicy:
    sharing: Sharing = Sharing.ALL
    pruning: Pruning = Pruning.NONE
    # FedAvg-FT: adapt the global model to the user's data before the final evaluation.
    finetune_before_eval: bool = False
    # How the client trains: a name in fedhei.federation.algorithms.ALGORITHMS (FedRep, Ditto, FedALA, FedBABU).
    algorithm: str = PLAIN
    # FedRep: epochs on the head alone (body frozen) before the body's epochs (head frozen).
    head_epochs: float = 0.0

    def __post_init__(self) -> None:
        algorithm_for(self.algorithm)
        if self.head_epochs < 0 or (self.head_epochs > 0 and self.algorithm != FEDREP):
            raise FedheiError(f"head-epochs is {self.head_epochs:g}; it is the fedrep algorithm's head training (>= 0) "
                              f"and must be 0 with algorithm '{self.algorithm}'")

    def to_config(self) -> dict[str, Any]:
        return {
            "sharing": self.sharing.value,
            "pruning": self.pruning.value,
            "finetune-before-eval": self.finetune_before_eval,
            "algorithm": self.algorithm,
            "head-epochs": float(self.head_epochs),
        }

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> ClientPolicy:
        return cls(
            sharing=Sharing(values["sharing"]),
            pruning=Pruning(values["pruning"]),
            finetune_before_eval=bool(values["finetune-before-eval"]),
            algorithm=str(values["algorithm"]),
            head_epochs=float(values["head-epochs"]),
        )

    @property
    def adapts_before_export(self) -> bool:
        """Every strategy but plain FedAvg ends with a local round on the final global model."""
        return (self.finetune_before_eval or self.sharing is not Sharing.ALL or self.pruning is not Pruning.NONE
                or self.algorithm != PLAIN)

    @property
    def uses_roles(self) -> bool:
        return self.sharing is Sharing.GENERIC or self.pruning is not Pruning.NONE


def personal_parameters(
    policy: ClientPolicy,
    parameter_names: Iterable[str],
    personalized_layers: Iterable[str],
    head: Collection[str] = (),
) -> set[str]:
    """The parameters that never leave the client under ``policy``; ``head`` names the
    model's head parameters (``adapter_for(model).head_parameters(model)``), which the
    sharing policies that split at the head need."""
    names = list(parameter_names)
    heads = set(head)
    if policy.sharing in (Sharing.BODY, Sharing.HEAD) and not heads & set(names):
        raise FedheiError(f"sharing '{policy.sharing.value}' splits the model at its head, but none of its parameters "
                          "is a head parameter; FedPer, FedRep, LG-FedAvg and FedBABU need a model with a classifier "
                          "or language-model head (a timm ViT or a Qwen2 model)")
    selectors = {
        Sharing.ALL: lambda name: False,
        Sharing.BODY: lambda name: name in heads,
        Sharing.HEAD: lambda name: name not in heads,
        Sharing.NONE: lambda name: True,
        Sharing.GENERIC: _in_layers(personalized_layers),
    }
    is_personal = selectors[policy.sharing]
    return {name for name in names if is_personal(name)}


def _in_layers(layers: Iterable[str]) -> Callable[[str], bool]:
    owners = set(layers)
    return lambda name: name.rsplit(".", 1)[0] in owners


def shared_parameters(
    policy: ClientPolicy,
    parameter_names: Iterable[str],
    personalized_layers: Iterable[str] = (),
    head: Collection[str] = (),
) -> set[str]:
    """What the server must still send to a client that has trained before: everything it
    shares, given the personalized layers it reported (FedHEI's roles are per client)."""
    names = list(parameter_names)
    return set(names) - personal_parameters(policy, names, personalized_layers, head=head)


def download_parameters(
    policy: ClientPolicy,
    parameter_names: Sequence[str],
    personalized_layers: Iterable[str] | None,
    head: Collection[str],
) -> list[str]:
    """What the server sends one client, in model order: everything to a newcomer (no reported layers:
    it holds no model yet), only what it shares to a client that has trained (it keeps the rest)."""
    if personalized_layers is None:
        return list(parameter_names)
    shared = shared_parameters(policy, parameter_names, personalized_layers, head=head)
    return [name for name in parameter_names if name in shared]

"""What a client keeps between rounds, in a form any state store can hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fedhei.method.roles import RoleMap


@dataclass
class ClientState:
    """What a client keeps between rounds: its personal parameters, masks, roles and schedule."""

    personal: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    # A client-side algorithm's own tensors (Ditto's personal model, FedALA's local layers and
    # weights), kept here so a resumed run continues from exactly what the next round needs.
    algorithm: dict[str, torch.Tensor] = field(default_factory=dict)
    roles: RoleMap | None = None
    step: int = 0
    classified_round: int = 0
    rounds_trained: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensors for a state store (masks as uint8, so any store can hold them)."""
        flat = {f"personal/{name}": value for name, value in self.personal.items()}
        flat.update({f"mask/{name}": value.to(torch.uint8) for name, value in self.masks.items()})
        flat.update({f"algorithm/{name}": value for name, value in self.algorithm.items()})
        return flat

    def meta(self) -> dict[str, Any]:
        return {
            "roles": self.roles.to_dict() if self.roles else None,
            "step": self.step,
            "classified-round": self.classified_round,
            "rounds-trained": self.rounds_trained,
        }

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> ClientState:
        return cls(
            personal={k.removeprefix("personal/"): v for k, v in tensors.items() if k.startswith("personal/")},
            masks={k.removeprefix("mask/"): v.bool() for k, v in tensors.items() if k.startswith("mask/")},
            algorithm={k.removeprefix("algorithm/"): v for k, v in tensors.items() if k.startswith("algorithm/")},
            roles=RoleMap.from_dict(meta["roles"]) if meta.get("roles") else None,
            step=int(meta["step"]),
            classified_round=int(meta["classified-round"]),
            rounds_trained=int(meta["rounds-trained"]),
        )

"""Per-client state stores: where a client keeps its personal layers between rounds.

The ClientApp is rebuilt on every call, so nothing may live on it. ``disk`` (the
default) keeps one safetensors file per client and round under the run directory,
written atomically, so a run killed mid-round resumes from exactly the state each
client had after the last complete round; ``context`` keeps it in Flower's
``context.state`` (a RecordDict per node), which is lost with the process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Context
from safetensors import safe_open
from safetensors.torch import load_file

from fedhei.federation.state import ClientState
from fedhei.models.safetensors_file import write_safetensors

TENSORS_KEY = "fedhei-state"
META_KEY = "fedhei-meta"
_VERSION = re.compile(r"round-(\d+)\.safetensors")


class StateStore(Protocol):
    def load(self, before_round: int) -> ClientState | None:
        """The state the client had when ``before_round`` began (saved in an earlier round)."""
        ...

    def save(self, state: ClientState, server_round: int) -> None: ...


class ContextStateStore:
    """State in ``context.state``: the supported Flower place for personal layers, one version only."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def load(self, before_round: int) -> ClientState | None:
        state = self.context.state
        if META_KEY not in state.config_records:
            return None
        tensors = state.array_records[TENSORS_KEY].to_torch_state_dict()
        meta = json.loads(str(state.config_records[META_KEY]["json"]))
        return ClientState.from_parts(tensors, meta)

    def save(self, state: ClientState, server_round: int) -> None:
        self.context.state[TENSORS_KEY] = ArrayRecord(state.tensors())
        self.context.state[META_KEY] = ConfigRecord({"json": json.dumps(state.meta())})


class DiskStateStore:
    """State in ``<directory>/client-<id>/round-<r>.safetensors``, the metadata in its header.

    A round's work may be cut short (a killed run), so the state a round starts from
    is never overwritten by that round: each save keeps the newest earlier version
    beside the new one, and a load takes the newest version saved before the round.
    """

    def __init__(self, directory: Path, client_id: int) -> None:
        self.directory = directory / f"client-{client_id}"

    def _versions(self) -> dict[int, Path]:
        if not self.directory.is_dir():
            return {}
        found = (_VERSION.fullmatch(path.name) for path in self.directory.iterdir())
        return {int(match.group(1)): self.directory / match.group(0) for match in found if match}

    def load(self, before_round: int) -> ClientState | None:
        earlier = [number for number in self._versions() if number < before_round]
        if not earlier:
            return None
        path = self._versions()[max(earlier)]
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[META_KEY])
        return ClientState.from_parts(load_file(str(path)), meta)

    def save(self, state: ClientState, server_round: int) -> None:
        path = self.directory / f"round-{server_round}.safetensors"
        write_safetensors(path, state.tensors(), {META_KEY: json.dumps(state.meta())})
        versions = self._versions()
        earlier = [number for number in versions if number < server_round]
        keep = {server_round, max(earlier)} if earlier else {server_round}
        for number, stale in versions.items():
            if number not in keep:
                stale.unlink(missing_ok=True)


def open_store(kind: str, context: Context, directory: Path, client_id: int) -> StateStore:
    stores: dict[str, Callable[[], StateStore]] = {
        "context": lambda: ContextStateStore(context),
        "disk": lambda: DiskStateStore(directory, client_id),
    }
    return stores[kind]()

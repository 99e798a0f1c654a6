"""Per-client state stores: where a client keeps its personal layers between rounds.

The ClientApp is rebuilt on every call, so nothing may live on it. ``context`` keeps
the state in Flower's ``context.state`` (a RecordDict per node); ``disk`` keeps one
safetensors file per client, written atomically and loaded per call, so a thousand
registered clients do not sit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Context
from safetensors.torch import load_file, save_file

from fedhei import atomic
from fedhei.federation.client_round import ClientState

TENSORS_KEY = "fedhei-state"
META_KEY = "fedhei-meta"


class StateStore(Protocol):
    def load(self) -> ClientState | None: ...

    def save(self, state: ClientState) -> None: ...


class ContextStateStore:
    """State in ``context.state``: the supported Flower place for personal layers."""

    def __init__(self, context: Context) -> None:
        self.context = context

    def load(self) -> ClientState | None:
        state = self.context.state
        if META_KEY not in state.config_records:
            return None
        tensors = state.array_records[TENSORS_KEY].to_torch_state_dict()
        meta = json.loads(str(state.config_records[META_KEY]["json"]))
        return ClientState.from_parts(tensors, meta)

    def save(self, state: ClientState) -> None:
        self.context.state[TENSORS_KEY] = ArrayRecord(state.tensors())
        self.context.state[META_KEY] = ConfigRecord({"json": json.dumps(state.meta())})


class DiskStateStore:
    """State in ``<state-dir>/client-<id>.safetensors``, the metadata in its header."""

    def __init__(self, directory: Path, client_id: int) -> None:
        self.path = directory / f"client-{client_id}.safetensors"

    def load(self) -> ClientState | None:
        if not self.path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["fedhei-meta"])
        return ClientState.from_parts(load_file(str(self.path)), meta)

    def save(self, state: ClientState) -> None:
        tensors = {name: value.contiguous() for name, value in state.tensors().items()}
        metadata = {"fedhei-meta": json.dumps(state.meta())}
        atomic.write_with(self.path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), suffix=".safetensors")


def open_store(kind: str, context: Context, directory: Path, client_id: int) -> StateStore:
    stores: dict[str, Callable[[], StateStore]] = {
        "context": lambda: ContextStateStore(context),
        "disk": lambda: DiskStateStore(directory, client_id),
    }
    return stores[kind]()

"""Safetensors files that are byte-identical whenever their content is.

The safetensors writer keeps the string metadata in a hash map whose order changes
from process to process, so two runs that write the same tensors and metadata give
files that differ in their header. fedhei's promise (same scenario and seed, same
model files) needs the order fixed: the header is rewritten with sorted metadata,
same length, same tensors, before the file is written atomically.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save

from fedhei import atomic

_LENGTH = struct.Struct("<Q")


def canonical_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of ``tensors`` with the header's metadata in sorted order."""
    raw = save({name: value.detach().contiguous().cpu() for name, value in tensors.items()}, metadata=dict(metadata or {}))
    (length,) = _LENGTH.unpack_from(raw)
    header = json.loads(raw[_LENGTH.size : _LENGTH.size + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    # The writer pads the header with spaces to keep the data aligned; keep its length.
    assert len(encoded) <= length, "a reordered header is never longer than the original"
    return raw[: _LENGTH.size] + encoded.ljust(length, b" ") + raw[_LENGTH.size + length :]


def write_safetensors(path: Path | str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (and string ``metadata``) to ``path`` atomically, in canonical form."""
    payload = canonical_bytes(tensors, metadata)
    atomic.write_with(path, lambda tmp: tmp.write_bytes(payload), suffix=".safetensors")

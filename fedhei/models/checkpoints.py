"""Safetensors checkpoints: written atomically, read without pickles."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from fedhei import atomic
from fedhei.errors import FedheiError
from fedhei.models.registry import create_model


def _canonical(serialized: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted.

    safetensors writes the metadata in hash-map order, which changes from process to
    process; sorted, the same model and metadata always give the same bytes.
    """
    length = int.from_bytes(serialized[:8], "little")
    header = json.dumps(json.loads(serialized[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + serialized[8 + length :]


def save_checkpoint(model: nn.Module, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write the state dict as safetensors, atomically (no pickle, no half-written file), byte-reproducibly."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    serialized = _canonical(save(tensors, metadata=metadata or {}))
    atomic.write_with(path, lambda tmp: tmp.write_bytes(serialized), suffix=".safetensors")


def read_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata of a safetensors checkpoint, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise FedheiError(f"checkpoint {path} does not exist; pre-train one with `fedhei pretrain --out {path}`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise FedheiError(f"{path} is not a readable safetensors checkpoint ({error})") from error


def load_state(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors checkpoint."""
    metadata = read_metadata(path)
    try:
        return load_file(str(path)), metadata
    except (SafetensorError, OSError) as error:
        raise FedheiError(f"{path} is not a readable safetensors checkpoint ({error})") from error


def load_checkpoint(path: Path | str, model_name: str | None = None) -> VisionTransformer:
    """Rebuild the model named in the checkpoint's metadata (or ``model_name``) and load it."""
    state, metadata = load_state(path)
    name = model_name or metadata.get("model")
    if not name:
        raise FedheiError(f"{path} does not say which model it holds; pass the model name")
    model = create_model(name)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise FedheiError(f"{path} does not fit model {name}: {str(error).splitlines()[0]}") from error
    return model

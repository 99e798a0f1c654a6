"""Safetensors checkpoints: written atomically, read without pickles."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fedhei import atomic
from fedhei.errors import FedheiError
from fedhei.models import language
from fedhei.models.registry import create_model


def save_checkpoint(model: nn.Module, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write the state dict as safetensors, atomically (no pickle, no half-written file)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    atomic.write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata or {}), suffix=".safetensors")


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


def load_checkpoint(path: Path | str, model_name: str | None = None) -> nn.Module:
    """Rebuild the model and load its weights, strictly (a missing or extra tensor is an error).

    ``path`` is a safetensors file, whose metadata names the model (fedhei's own files),
    or a Qwen2 checkpoint folder, or a safetensors file inside one; a checkpoint folder
    is its own architecture. ``model_name`` overrides either, e.g. a registry model of
    the same shapes.
    """
    path = Path(path)
    if path.is_dir():
        state, name = language.folder_state(path), str(path)
    else:
        state, metadata = load_state(path)
        name = metadata.get("model") or (str(path.parent) if language.is_checkpoint_folder(str(path.parent)) else "")
    name = model_name or name
    if not name:
        raise FedheiError(f"{path} does not say which model it holds; pass the model name")
    model = create_model(name)
    try:
        model.load_state_dict(language.untied(state))
    except RuntimeError as error:
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:2])[:300]
        raise FedheiError(f"{path} does not fit model {name}: {detail}") from error
    return model

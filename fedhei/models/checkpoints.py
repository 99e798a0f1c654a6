"""Safetensors checkpoints, dense or sparse: written atomically, read without pickles.

A sparse checkpoint stores each tensor whose zeros make it smaller as its nonzero
values plus a bit-packed mask (``fedhei.models.sparse``, the wire's layout), and
lists those tensors' shapes as JSON under the ``fedhei-sparse`` metadata key. A
pruned model keeps its pruned weights at zero, so the zeros are its masks, and
loading densifies exactly what was saved. A structurally pruned model
(:mod:`fedhei.method.structured`) records its shrunk shapes instead. One loader,
:func:`load_checkpoint`, reads dense, sparse and structurally pruned files alike, from their metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from fedhei.errors import FedheiError
from fedhei.models import language
from fedhei.models.adapters import adapter_for
from fedhei.models.registry import create_model, linear_layers
from fedhei.models.safetensors_file import write_safetensors
from fedhei.models.sparse import MASK_SUFFIX, VALUES_SUFFIX, pack_mask, packed_size, unpack_mask

SPARSE_KEY = "fedhei-sparse"
# Metadata key of a structurally pruned file: its shrunk layer shapes as JSON.
STRUCTURE_KEY = "fedhei-structure"
# About what going sparse adds to the file's header: a second entry, and the shape in the metadata.
SPARSE_HEADER_BYTES = 128


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}


def save_checkpoint(model: nn.Module, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write the state dict as safetensors, atomically (no pickle, no half-written file)."""
    write_safetensors(path, _tensors(model), metadata)


def dense_file_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> int:
    """The size :func:`save_checkpoint` would give this model: what a sparse file is measured against."""
    return len(save(_tensors(model), metadata=metadata or {}))


def save_sparse(model: nn.Module, path: Path | str, metadata: dict[str, str] | None = None) -> None:
    """Write the state dict with every tensor that its zeros make smaller stored as values + packed mask.

    A floating tensor goes sparse when its nonzero values, one bit per entry and the
    header they add take fewer bytes than it does dense; anything else (a dense layer,
    a small bias, an integer buffer) stays as it is. A zero is dropped whatever its sign, so ``-0.0`` loads as ``0.0``.
    """
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, value in _tensors(model).items():
        keep = value != 0
        sparse_bytes = int(keep.sum()) * value.element_size() + packed_size(value.numel()) + SPARSE_HEADER_BYTES
        if value.is_floating_point() and sparse_bytes < value.numel() * value.element_size():
            tensors[name + VALUES_SUFFIX] = value.reshape(-1)[keep.reshape(-1)]
            tensors[name + MASK_SUFFIX] = torch.from_numpy(pack_mask(keep.numpy()))
            shapes[name] = list(value.shape)
        else:
            tensors[name] = value
    write_safetensors(path, tensors, {**(metadata or {}), SPARSE_KEY: json.dumps(shapes, separators=(",", ":"))})


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
    """Dense tensors and metadata of a safetensors checkpoint, sparse tensors densified."""
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise FedheiError(f"{path} is not a readable safetensors checkpoint ({error})") from error
    if SPARSE_KEY in metadata:
        try:
            tensors = _densify(tensors, metadata[SPARSE_KEY])
        except ValueError as error:
            raise FedheiError(f"{path} is not a consistent sparse checkpoint: {error}; export it again") from error
    return tensors, metadata


def _densify(tensors: dict[str, torch.Tensor], declared: str) -> dict[str, torch.Tensor]:
    """Rebuild every declared sparse tensor; ``ValueError`` when the file disagrees with its own metadata."""
    shapes = json.loads(declared)
    if not isinstance(shapes, dict):
        raise ValueError(f"its {SPARSE_KEY} metadata is not a table of shapes")
    dense = {name: value for name, value in tensors.items() if "::" not in name}
    for name, shape in shapes.items():
        if not isinstance(shape, list) or not all(isinstance(size, int) and size >= 0 for size in shape):
            raise ValueError(f"'{name}' has shape {shape!r}")
        if name in dense:
            raise ValueError(f"'{name}' is stored both dense and sparse")
        values, packed = tensors.get(name + VALUES_SUFFIX), tensors.get(name + MASK_SUFFIX)
        if values is None or packed is None:
            raise ValueError(f"'{name}' lacks its {VALUES_SUFFIX} or {MASK_SUFFIX} tensor")
        if packed.dtype != torch.uint8:
            raise ValueError(f"'{name}{MASK_SUFFIX}' is {packed.dtype}, expected uint8")
        keep = torch.from_numpy(unpack_mask(packed.numpy(), tuple(shape)))
        if not values.is_floating_point() or values.dim() != 1 or values.numel() != int(keep.sum()):
            raise ValueError(f"'{name}' stores {values.numel()} {values.dtype} values for {int(keep.sum())} kept weights")
        full = torch.zeros(tuple(shape), dtype=values.dtype)
        full[keep] = values
        dense[name] = full
    declared_keys = {name + suffix for name in shapes for suffix in (VALUES_SUFFIX, MASK_SUFFIX)}
    strays = sorted(key for key in tensors if "::" in key and key not in declared_keys)
    if strays:
        raise ValueError(f"'{strays[0]}' is not declared in its {SPARSE_KEY} metadata")
    return dense


def load_checkpoint(path: Path | str, model_name: str | None = None) -> nn.Module:
    """Rebuild the model a checkpoint holds and load its weights, strictly (a missing or
    extra tensor is an error).

    ``path`` is a safetensors file of fedhei's (dense, sparse or structurally pruned,
    told apart by its metadata, which names the model), or a Qwen2 checkpoint folder,
    or a safetensors file inside one; a checkpoint folder is its own architecture.
    ``model_name`` names the model when a dense or sparse file does not, or overrides
    it (e.g. a registry model of the same shapes); a structurally pruned file always
    names its base model.
    """
    path = Path(path)
    if path.is_dir():
        state, name = language.folder_state(path), str(path)
    else:
        if STRUCTURE_KEY in read_metadata(path):
            return load_structured(path)
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


def structure(model: nn.Module) -> dict[str, Any]:
    """The shapes that make a structurally pruned model differ from its base."""
    return {"layers": {layer.name: [layer.out_features, layer.in_features] for layer in linear_layers(model)}}


def save_structured(model: nn.Module, path: Path | str, metadata: Mapping[str, str]) -> None:
    """Safetensors (atomic, no pickle) with the shrunk shapes as JSON in the metadata.

    ``metadata["model"]`` names the base model, which :func:`load_structured` rebuilds
    and then cuts to the recorded shapes.
    """
    if not metadata.get("model"):
        raise FedheiError("save_structured needs metadata['model'], the base model's name, to load the file back")
    write_safetensors(path, model.state_dict(), {**metadata, STRUCTURE_KEY: json.dumps(structure(model))})


def load_structured(path: Path | str) -> nn.Module:
    """Rebuild a structurally pruned model from :func:`save_structured`'s file."""
    state, metadata = load_state(path)
    if STRUCTURE_KEY not in metadata or "model" not in metadata:
        raise FedheiError(f"{path} is not a structurally pruned model (no {STRUCTURE_KEY} or model in its metadata)")
    try:
        shapes = json.loads(metadata[STRUCTURE_KEY])
        model = create_model(metadata["model"])
        modules = dict(model.named_modules())
        for name, (out_features, in_features) in shapes["layers"].items():
            parent_name, _, child = name.rpartition(".")
            has_bias = f"{name}.bias" in state
            setattr(modules[parent_name] if parent_name else model, child, nn.Linear(in_features, out_features, bias=has_bias))
        adapter_for(model).sync_structure(model)
        model.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise FedheiError(f"{path} does not describe a loadable pruned model: {str(error).splitlines()[0]}") from error
    return model.eval()

"""The wire format of a client update, its strict checks, and masked aggregation.

Pure numpy, no Flower: the strategy wraps these arrays into an ``ArrayRecord``.
A pruned tensor travels as its kept values plus a bit-packed keep-mask, so a zero
costs one bit instead of four bytes; any other tensor travels dense.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

VALUES_SUFFIX = "::values"
MASK_SUFFIX = "::mask"


class UpdateError(ValueError):
    """An update the server must not aggregate; the message says why."""


@dataclass(frozen=True)
class DecodedTensor:
    values: np.ndarray  # dense, float32, the global tensor's shape
    keep: np.ndarray  # bool, same shape: where this client's weights count


def encode(tensors: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sparse-encode the masked tensors (values + packed mask), dense for the rest."""
    out: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        tensor = np.asarray(tensor, dtype=np.float32)
        if name in masks:
            keep = np.asarray(masks[name], dtype=bool).reshape(-1)
            out[name + VALUES_SUFFIX] = tensor.reshape(-1)[keep]
            out[name + MASK_SUFFIX] = np.packbits(keep)
        else:
            out[name] = tensor
    return out


def decode(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, DecodedTensor]:
    """Rebuild dense tensors and keep-masks, refusing anything the server cannot trust.

    Refused: names the global model does not have, shapes that do not match it,
    masks whose kept count disagrees with the values sent, and non-finite values.
    """
    decoded: dict[str, DecodedTensor] = {}
    for key, array in arrays.items():
        if key.endswith(MASK_SUFFIX):
            continue
        name = key.removesuffix(VALUES_SUFFIX)
        if name not in shapes:
            raise UpdateError(f"unknown layer name '{name}'")
        shape = tuple(shapes[name])
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            raise UpdateError(f"'{name}' has dtype {array.dtype}, expected floating point")
        if not np.all(np.isfinite(array)):
            raise UpdateError(f"'{name}' holds NaN or infinite values")
        if key.endswith(VALUES_SUFFIX):
            decoded[name] = _decode_sparse(name, array, arrays.get(name + MASK_SUFFIX), shape)
        else:
            if tuple(array.shape) != shape:
                raise UpdateError(f"'{name}' has shape {tuple(array.shape)}, the global model has {shape}")
            decoded[name] = DecodedTensor(array.astype(np.float32), np.ones(shape, dtype=bool))
    orphans = [key for key in arrays if key.endswith(MASK_SUFFIX) and key.removesuffix(MASK_SUFFIX) not in decoded]
    if orphans:
        raise UpdateError(f"mask without values: '{orphans[0]}'")
    return decoded


def _decode_sparse(name: str, values: np.ndarray, packed: np.ndarray | None, shape: tuple[int, ...]) -> DecodedTensor:
    if packed is None:
        raise UpdateError(f"'{name}' has values but no mask")
    size = int(np.prod(shape))
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != (size + 7) // 8:
        raise UpdateError(f"'{name}' mask does not fit the global shape {shape}")
    keep = np.unpackbits(packed, count=size).astype(bool)
    if values.ndim != 1 or int(keep.sum()) != len(values):
        raise UpdateError(f"'{name}' sends {values.size} values for {int(keep.sum())} kept weights")
    dense = np.zeros(size, dtype=np.float32)
    dense[keep] = values
    return DecodedTensor(dense.reshape(shape), keep.reshape(shape))


def masked_average(
    current: Mapping[str, np.ndarray], updates: Sequence[tuple[float, Mapping[str, DecodedTensor]]]
) -> dict[str, np.ndarray]:
    """Average each tensor over the clients that send it, weight by weight over those that keep it.

    ``w_i`` is client i's example count: new = sum_i(w_i m_i x_i) / sum_i(w_i m_i) where the
    denominator is positive; a weight that no client keeps (or sends) keeps its current value.
    """
    result = {name: np.array(value, copy=True) for name, value in current.items()}
    names = {name for _, update in updates for name in update}
    for name in names:
        numerator = np.zeros_like(result[name], dtype=np.float64)
        denominator = np.zeros_like(result[name], dtype=np.float64)
        for weight, update in updates:
            if name in update:
                kept = update[name].keep * weight
                numerator += kept * update[name].values
                denominator += kept
        counted = denominator > 0
        result[name] = np.where(counted, numerator / np.where(counted, denominator, 1.0), result[name]).astype(result[name].dtype)
    return result


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Payload bytes of a set of arrays, as counted on what is actually sent."""
    return int(sum(np.asarray(array).nbytes for array in arrays.values()))

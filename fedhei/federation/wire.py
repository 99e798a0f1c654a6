"""The wire format of a client update, its strict checks, and masked aggregation.

Pure numpy, no Flower: the strategy wraps these arrays into an ``ArrayRecord``.
Each tensor travels in one layout, named by the suffixes of its keys (an int8 tensor
carries one positive float32 scale):

| keys | what the server rebuilds |
| --- | --- |
| ``name`` | float32, dense: the new values |
| ``name::values`` + ``name::mask`` | float32 kept values + bit-packed keep-mask |
| ``name::delta-f16`` [+ ``name::mask``] | global + the float16 change (dense, or kept weights only) |
| ``name::delta-i8`` + ``name::scale`` [+ ``name::mask``] | global + code * scale (int8 codes in [-127, 127]; scale > 0) |

Why quantize the change and not the weights (as QSGD and FedPAQ do): the server and
the client hold the same global tensor, so only ``new - global`` must travel, and
after a round of local training it is far smaller than the weights themselves.
One int8 scale per tensor must span that tensor's largest value: over the weights
(say up to 0.5) a step is 0.004, as large as a whole local round's change, while
over the change the step shrinks with the change. The error per weight is at most
half a step (``scale / 2``) for int8 and a relative 2^-11 of the change for
float16, plus float32 rounding of the sum. Pruned weights send no change: their
mask says the client does not count there. A tensor whose global value the client
did not receive this round has no reference, so it travels float32.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedhei.config.precision import Precision
from fedhei.models.sparse import MASK_SUFFIX, VALUES_SUFFIX, pack_mask, unpack_mask

DELTA_F16_SUFFIX = "::delta-f16"
DELTA_I8_SUFFIX = "::delta-i8"
SCALE_SUFFIX = "::scale"
# Symmetric codes: -128 is never sent, so code * scale spans [-peak, peak] exactly.
INT8_LEVELS = 127


class UpdateError(ValueError):
    """An update the server must not aggregate; the message says why."""


@dataclass(frozen=True)
class DecodedTensor:
    values: np.ndarray  # dense, float32, the global tensor's shape
    keep: np.ndarray  # bool, same shape: where this client's weights count
    # True where the client sent no mask, so ``keep`` is all True: averaging may skip it.
    unmasked: bool = False


def encode(
    tensors: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    precision: Precision | str = Precision.FLOAT32,
    reference: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Encode an update: masked tensors sparse, the rest dense, values at ``precision``.

    ``reference`` is the global model as this client received it this round; float16
    and int8 send the change from it, so the server must decode against the same values.
    """
    precision = Precision(precision)
    reference = reference or {}
    out: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        tensor = np.asarray(tensor, dtype=np.float32)
        keep = np.asarray(masks[name], dtype=bool).reshape(-1) if name in masks else None
        if keep is not None:
            out[name + MASK_SUFFIX] = pack_mask(keep)
        if precision is Precision.FLOAT32 or name not in reference:
            if keep is None:
                out[name] = tensor
            else:
                out[name + VALUES_SUFFIX] = tensor.reshape(-1)[keep]
            continue
        delta = tensor.astype(np.float64) - np.asarray(reference[name], dtype=np.float64)
        if keep is not None:
            delta = delta.reshape(-1)[keep]
        # A diverged client's update still encodes; the server refuses its non-finite values.
        with np.errstate(over="ignore", invalid="ignore"):
            if precision is Precision.FLOAT16:
                out[name + DELTA_F16_SUFFIX] = delta.astype(np.float16)
            else:
                out[name + DELTA_I8_SUFFIX], out[name + SCALE_SUFFIX] = _quantize_int8(delta)
    return out


def _quantize_int8(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round to the nearest of 255 symmetric levels; the scale is the peak over 127 (never zero)."""
    peak = float(np.max(np.abs(delta), initial=0.0))
    scale = np.float32(max(peak / INT8_LEVELS, float(np.finfo(np.float32).tiny)))
    codes = np.clip(np.rint(delta / np.float64(scale)), -INT8_LEVELS, INT8_LEVELS)
    return np.nan_to_num(codes).astype(np.int8), np.array([scale], dtype=np.float32)


# Each layout as the set of key suffixes that carry one tensor ("" is the bare name).
_LAYOUTS = {
    frozenset({""}),
    frozenset({VALUES_SUFFIX, MASK_SUFFIX}),
    frozenset({DELTA_F16_SUFFIX}),
    frozenset({DELTA_F16_SUFFIX, MASK_SUFFIX}),
    frozenset({DELTA_I8_SUFFIX, SCALE_SUFFIX}),
    frozenset({DELTA_I8_SUFFIX, SCALE_SUFFIX, MASK_SUFFIX}),
}


def decode(arrays: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray]) -> dict[str, DecodedTensor]:
    """Rebuild dense tensors and keep-masks against the global model ``current``, refusing what the server cannot trust.

    Refused: names the global model does not have, key sets that are no layout,
    dtypes other than the layout's, shapes that do not match the global model, masks
    whose kept count disagrees with the values sent, non-finite values, int8 codes
    outside [-127, 127], a scale that is not one finite positive float32, and
    changes that overflow once added to the global value.
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        name, separator, suffix = key.partition("::")
        groups.setdefault(name, {})[separator + suffix] = np.asarray(array)
    decoded: dict[str, DecodedTensor] = {}
    for name, parts in groups.items():
        if name not in current:
            raise UpdateError(f"unknown layer name '{name}'")
        decoded[name] = _decode_one(name, parts, np.asarray(current[name]))
    return decoded


def _decode_one(name: str, parts: dict[str, np.ndarray], reference: np.ndarray) -> DecodedTensor:
    layout = frozenset(parts)
    if layout not in _LAYOUTS:
        if layout == {MASK_SUFFIX}:
            raise UpdateError(f"mask without values: '{name}{MASK_SUFFIX}'")
        if layout == {VALUES_SUFFIX}:
            raise UpdateError(f"'{name}' has values but no mask")
        raise UpdateError(f"'{name}' arrives as {', '.join(sorted(name + part for part in parts))}: not a layout of the wire format")
    shape = tuple(reference.shape)
    payload_suffix = next(part for part in (VALUES_SUFFIX, DELTA_F16_SUFFIX, DELTA_I8_SUFFIX, "") if part in parts)
    payload = parts[payload_suffix]
    expected = {VALUES_SUFFIX: np.float32, DELTA_F16_SUFFIX: np.float16, DELTA_I8_SUFFIX: np.int8, "": np.float32}[payload_suffix]
    if payload.dtype != expected:
        raise UpdateError(f"'{name}{payload_suffix}' has dtype {payload.dtype}, expected {np.dtype(expected)}")
    if payload.dtype.kind == "f" and not np.all(np.isfinite(payload)):
        raise UpdateError(f"'{name}' holds NaN or infinite values" + (" (float16 overflow)" if expected is np.float16 else ""))
    if payload.dtype == np.int8 and np.any(payload == -INT8_LEVELS - 1):
        raise UpdateError(f"'{name}' holds int8 code {-INT8_LEVELS - 1}; codes are in [{-INT8_LEVELS}, {INT8_LEVELS}]")
    if MASK_SUFFIX in parts:
        try:
            keep = unpack_mask(parts[MASK_SUFFIX], shape)
        except ValueError as error:
            raise UpdateError(f"'{name}' {error}") from error
        if payload.ndim != 1 or int(keep.sum()) != len(payload):
            raise UpdateError(f"'{name}' sends {payload.size} values for {int(keep.sum())} kept weights")
    else:
        if tuple(payload.shape) != shape:
            raise UpdateError(f"'{name}' has shape {tuple(payload.shape)}, the global model has {shape}")
        keep = np.ones(shape, dtype=bool)
    if payload_suffix in (VALUES_SUFFIX, ""):
        kept_values = payload.astype(np.float32).reshape(-1)
    else:
        change = payload.astype(np.float64).reshape(-1)
        if payload_suffix == DELTA_I8_SUFFIX:
            change = change * _scale(name, parts[SCALE_SUFFIX])
        with np.errstate(over="ignore"):
            kept_values = (reference.astype(np.float64).reshape(-1)[keep.reshape(-1)] + change).astype(np.float32)
        if not np.all(np.isfinite(kept_values)):
            raise UpdateError(f"'{name}' overflows float32 once its change is added to the global value")
    if MASK_SUFFIX not in parts:
        return DecodedTensor(kept_values.reshape(shape), keep, unmasked=True)
    dense = np.zeros(keep.size, dtype=np.float32)
    dense[keep.reshape(-1)] = kept_values
    return DecodedTensor(dense.reshape(shape), keep)


def _scale(name: str, scale: np.ndarray) -> np.float64:
    if scale.dtype != np.float32 or scale.shape != (1,):
        raise UpdateError(f"'{name}{SCALE_SUFFIX}' is {scale.dtype} of shape {scale.shape}, expected float32 of shape (1,)")
    value = scale[0]
    if not (np.isfinite(value) and value > 0):
        raise UpdateError(f"'{name}{SCALE_SUFFIX}' is {value}; it must be finite and positive")
    return np.float64(value)


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
            if name not in update:
                continue
            tensor = update[name]
            if tensor.unmasked:
                # The same products and sums as below, without the all-True mask's arrays.
                numerator += tensor.values * np.float64(weight)
                denominator += np.float64(weight)
            else:
                kept = tensor.keep * weight
                numerator += kept * tensor.values
                denominator += kept
        counted = denominator > 0
        result[name] = np.where(counted, numerator / np.where(counted, denominator, 1.0), result[name]).astype(result[name].dtype)
    return result


def kept_by_any(
    current: Mapping[str, np.ndarray], updates: Sequence[tuple[float, Mapping[str, DecodedTensor]]]
) -> dict[str, np.ndarray]:
    """Per tensor that some client sent: where at least one client with a positive weight keeps the weight
    (what the server optimizer may move; :func:`masked_average` leaves the rest as it was)."""
    counted: dict[str, np.ndarray] = {}
    for weight, update in updates:
        if weight <= 0:
            continue
        for name, tensor in update.items():
            counted[name] = counted.get(name, np.zeros(np.shape(current[name]), dtype=bool)) | tensor.keep
    return counted


@lru_cache(maxsize=4096)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The header ``np.save`` writes before a C-ordered array of ``dtype`` and ``shape``."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return header.getvalue()


def npy_array(data: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """The array in ``.npy`` bytes (how a Flower ``Array`` holds its data), read without copying.

    ``np.load`` parses every header with ``ast.literal_eval`` and copies the payload: a
    few milliseconds per model, on every client and for every reply the server reads.
    Where the bytes start with exactly the header ``np.save`` writes for the declared
    dtype and shape, and hold exactly that many bytes after it, the payload is the
    array: a read-only view is returned. Anything else goes through ``np.load``
    (never with pickles), so what the view returns is what ``np.load`` would.
    """
    kind = np.dtype(dtype)
    header = _npy_header(kind.str, tuple(int(size) for size in shape))
    count = int(np.prod(shape, dtype=np.int64))
    if data[:len(header)] == header and len(data) == len(header) + count * kind.itemsize:
        return np.frombuffer(data, dtype=kind, count=count, offset=len(header)).reshape(shape)
    return np.load(io.BytesIO(data), allow_pickle=False)


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """Payload bytes of a set of arrays, as counted on what is actually sent."""
    return int(sum(np.asarray(array).nbytes for array in arrays.values()))

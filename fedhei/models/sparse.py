"""The one sparse layout of fedhei, on the wire and in model files: kept values plus a bit-packed mask.

A pruned weight then costs one bit instead of four bytes. The mask is numpy's
``packbits`` of the flattened keep-mask (big-endian bit order, zero padding), so
any language with a bit reader can decode it.
"""

from __future__ import annotations

import numpy as np

VALUES_SUFFIX = "::values"
MASK_SUFFIX = "::mask"


def pack_mask(keep: np.ndarray) -> np.ndarray:
    """The flattened keep-mask, eight weights per byte."""
    return np.packbits(np.asarray(keep, dtype=bool).reshape(-1))


def packed_size(numel: int) -> int:
    return (numel + 7) // 8


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The keep-mask of ``shape`` from its packed bytes; ``ValueError`` (one line) when they cannot be one.

    Strict on purpose: the padding bits must be zero, so a mask has exactly one encoding.
    """
    packed = np.asarray(packed)
    size = int(np.prod(shape, dtype=np.int64))
    if packed.dtype != np.uint8 or packed.ndim != 1 or len(packed) != packed_size(size):
        raise ValueError(f"mask is {packed.dtype} of shape {tuple(packed.shape)}, expected uint8 of ({packed_size(size)},) "
                         f"for shape {tuple(shape)}")
    bits = np.unpackbits(packed)
    if bits[size:].any():
        raise ValueError("mask has bits set beyond the tensor's size")
    return bits[:size].astype(bool).reshape(shape)

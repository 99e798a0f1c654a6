"""Which torch device a run uses, checked where the setting is read."""

from __future__ import annotations

import re

import torch

from fedhei.errors import FedheiError

_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """Refuse a device name torch would not understand, whatever this machine has."""
    if not _DEVICE_NAME.fullmatch(name):
        raise FedheiError(f"device is '{name}'; use auto, cpu, cuda, cuda:N or mps")


def check_device_available(name: str) -> None:
    """Refuse a device this machine lacks, before any worker tries to use it."""
    check_device_name(name)
    device = pick_device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FedheiError(f"device is '{name}' but torch sees no CUDA GPU here; use device = \"auto\" or \"cpu\"")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FedheiError(f"device is '{name}' but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise FedheiError(f"device is '{name}' but MPS is not available here; use device = \"auto\" or \"cpu\"")


def pick_device(name: str) -> torch.device:
    """``auto`` is the GPU when torch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

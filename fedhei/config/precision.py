"""The ``upload-precision`` choices, apart from the wire format that implements them, so the scenario can check
the setting without importing the federation above it."""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """What a client's update values travel as (``upload-precision``)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"

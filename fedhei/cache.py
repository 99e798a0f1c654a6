"""Where fedhei keeps decoded data sets and pre-trained base models."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_ENV = "FEDHEI_CACHE"


def cache_dir() -> Path:
    """The cache root: ``$FEDHEI_CACHE``, else ``~/.cache/fedhei``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "fedhei"


def config_hash(payload: Any, length: int = 16) -> str:
    """A stable short hash of a JSON-able config, so equal configs share a cache entry."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]

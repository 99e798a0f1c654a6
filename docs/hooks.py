"""MkDocs hooks: the configuration reference page is written from the code at build time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# The reference must describe the checkout being built, whatever fedhei is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedhei.config.reference import reference_markdown  # noqa: E402

GENERATED = "configuration.md"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the placeholder page by the reference generated from the scenario's fields."""
    if page.file.src_uri == GENERATED:
        return reference_markdown()
    return markdown

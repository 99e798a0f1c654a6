"""MkDocs hooks: the configuration reference is written from the code at build time, and docstrings read cleanly."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

# The reference must describe the checkout being built, whatever fedhei is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedhei.config.reference import reference_markdown  # noqa: E402

GENERATED = "configuration.md"
# Docstrings cross-reference in Sphinx's style (:class:`X`, :class:`~a.b.X` for "X"), which Markdown shows as text.
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr):<code>(?:~(?:\w+\.)*)?")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the placeholder page by the reference generated from the scenario's fields."""
    if page.file.src_uri == GENERATED:
        return reference_markdown()
    return markdown


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    """Drop the Sphinx role before a docstring's cross-reference, keeping the name it refers to."""
    return SPHINX_ROLE.sub("<code>", html)

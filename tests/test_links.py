"""Every relative link and image in the README and the documentation points at a file that exists.

`mkdocs build --strict` checks the site's own links too, but only for pages it
builds; this test also covers the README, which GitHub and PyPI show on their own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) and ![alt](target); the target may carry a "title" after a space.
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without external addresses and same-page anchors."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = (match.group(1) for match in LINK.finditer(prose))
    return [target for target in targets if not target.startswith(EXTERNAL) and not target.startswith("#")]


def broken_links(document: Path) -> list[str]:
    broken = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not (document.parent / path).exists():
            broken.append(target)
    return broken


def test_the_link_finder_sees_links_and_images_but_not_code() -> None:
    text = (
        "See [the method](method.md#roles) and ![a figure](evidence/x.png \"title\").\n"
        "[out](https://example.org) [here](#top) `[not](a-link.md)`\n"
        "```python\nmerged[name](call.md)\n```\n"
    )
    assert relative_links(text) == ["method.md#roles", "evidence/x.png"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document) == [], f"{document.relative_to(ROOT)} links to missing files"

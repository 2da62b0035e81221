"""Links in the Markdown MkDocs does not build (README.md, action/README.md) lead somewhere.

MkDocs' strict build (``make lint``) checks the links between docs/ pages; these two
files are read on GitHub and PyPI instead, so their relative links are checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", ["README.md", "action/README.md"])
def test_relative_links_name_files_that_exist(page: str) -> None:
    source = REPO / page
    for target in _LINK.findall(source.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (source.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{page} links to {target}, which does not exist"

"""The README's map of the code matches the tree: every module of the library and the stages is
named in its Layout section, and every path the section names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _layout() -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    start = readme.index("## Layout")
    fence = readme.index("```\n", start)
    return readme[start:readme.index("```\n", fence + 4)]


def test_every_module_is_on_the_map():
    section = _layout()
    modules = [p for folder in ("ocrstream", "services") for p in sorted((ROOT / folder).rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and "seaweedfs" not in p.parts]
    assert len(modules) > 60
    assert [str(p.relative_to(ROOT)) for p in modules if p.name not in section] == []


def test_every_folder_on_the_map_exists():
    folders = re.findall(r"^((?:ocrstream|services)/[\w/]+/)", _layout(), re.M)
    assert len(folders) >= 15
    assert [f for f in folders if not (ROOT / f).is_dir()] == []

"""Which files a list of paths names (``ocrstream submit``, the demo)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["iter_paths"]


def iter_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named by ``paths``: files as given, folders expanded (sorted, recursively, no dotfiles)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found

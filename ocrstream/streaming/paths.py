"""Which files a list of paths names (``ocrstream submit``, the demo)."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from ocrstream.errors import NotARegularFileError

__all__ = ["iter_paths"]


def _kind(mode: int) -> str:
    return ("FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")


def iter_paths(paths: Iterable[Path], on_skip: Callable[[Path, str], None] = lambda path, kind: None) -> list[Path]:
    """Files named by ``paths``: files as given, folders expanded (sorted, recursively, no dotfiles).

    Only regular files are read (nothing is opened here: ``stat`` only). A path given that names
    a FIFO, device or socket raises :class:`NotARegularFileError` at once (opening a FIFO blocks
    until something writes to it); one met inside a folder is skipped and passed to ``on_skip``
    with its kind.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.name.startswith(".") or p.is_dir():
                    continue
                if p.is_file():
                    found.append(p)
                else:
                    on_skip(p, _kind(p.lstat().st_mode))
        elif path.exists() and not path.is_file():
            raise NotARegularFileError(f"{path} is a {_kind(path.stat().st_mode)}, not a file: nothing to submit")
        else:
            found.append(path)
    return found

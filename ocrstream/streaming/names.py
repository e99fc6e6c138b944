"""Names that come from outside (file names, ids): made safe to store, log and display."""

from __future__ import annotations

import posixpath
import unicodedata

MAX_FILENAME_CHARS = 255


def sanitize_filename(name: str | None) -> str | None:
    """A submitted file name reduced to something safe to store and show, or None if nothing is left.

    Keeps the last path component only (``../../etc/passwd`` -> ``passwd``, ``C:\\x\\y.png`` ->
    ``y.png``), NFC-normalises, drops control and format characters (NUL, newlines, the
    right-to-left override U+202E and other Unicode categories Cc/Cf), and cuts to 255
    characters keeping the extension.
    """
    if not name:
        return None
    name = unicodedata.normalize("NFC", name.replace("\\", "/"))
    name = posixpath.basename(name.rstrip("/"))
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    name = name.strip().lstrip(".") or ""
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        name = name[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext if ext else name[:MAX_FILENAME_CHARS]
    return name or None


def strip_nul(text: str | None) -> str | None:
    """``text`` with NUL characters replaced by U+FFFD (PostgreSQL text cannot hold NUL)."""
    return text.replace("\x00", "\ufffd") if text else text


def clean_text(text: str | None, max_chars: int = 1024) -> str | None:
    """``text`` without control and format characters (NUL included), at most ``max_chars`` long:
    safe to store and display while keeping its structure (e.g. an ``s3://bucket/key`` source)."""
    if not text:
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))[:max_chars]

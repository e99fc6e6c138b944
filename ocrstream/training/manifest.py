"""Labelled line manifests: JSON Lines, one ``{"id", "image", "text", ...}`` object per line.

The format of ``../shared/data/sroie-dev/lines.jsonl``: ``image`` is a path relative to the
manifest's folder (absolute paths are accepted too), ``text`` the transcription; other keys
(``box``, ``src``, ``case``) are kept and ignored. ``"case": "upper"`` marks a label written in
upper case whatever the print (SROIE's ground truth): fine-tuning then scores it case-folded.
Synthetic lines, exported corrections and real lines therefore mix by listing several manifests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["LineSample", "ManifestError", "load_image", "read_manifest", "write_manifest"]

#: manifest lines longer than this are rejected (bounded input).
MAX_RECORD_BYTES = 64 * 1024


class ManifestError(ValueError):
    """A manifest line is not a JSON object with string ``image`` and ``text``, or an image is unreadable."""


@dataclass(frozen=True)
class LineSample:
    """One labelled line.

    Attributes:
        id: record id (the manifest's ``id``, else ``<manifest stem>:<line number>``).
        image: absolute path of the line image.
        text: transcription.
        caseless: the label's letter case carries no information (``"case": "upper"``).
        extra: the record's other keys.
    """

    id: str
    image: Path
    text: str
    caseless: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def read_manifest(path: str | Path, *, caseless: bool | None = None, limit: int | None = None) -> list[LineSample]:
    """Samples of a JSONL manifest; image paths resolved against its folder.

    Args:
        caseless: force every label caseless (True) or cased (False); None reads ``"case"``.
        limit: keep the first ``limit`` records.

    Raises:
        ManifestError: a line is not valid JSON, lacks ``image``/``text``, or exceeds 64 KiB.
        FileNotFoundError: the manifest does not exist.
    """
    path = Path(path)
    out: list[LineSample] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if limit is not None and len(out) >= limit:
                break
            if not line.strip():
                continue
            if len(line) > MAX_RECORD_BYTES:
                raise ManifestError(f"{path}:{n}: record longer than {MAX_RECORD_BYTES} bytes")
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ManifestError(f"{path}:{n}: not JSON: {exc}") from None
            if not (isinstance(rec, dict) and isinstance(rec.get("image"), str) and isinstance(rec.get("text"), str)):
                raise ManifestError(f"{path}:{n}: needs string fields 'image' and 'text'")
            extra = {k: v for k, v in rec.items() if k not in ("id", "image", "text")}
            is_caseless = rec.get("case") == "upper" if caseless is None else caseless
            out.append(LineSample(str(rec.get("id") or f"{path.stem}:{n}"), (path.parent / rec["image"]).resolve(),
                                  rec["text"], is_caseless, extra))
    return out


def write_manifest(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write ``records`` (dicts with at least ``id``, ``image``, ``text``) as JSONL; returns the count."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def load_image(sample: LineSample) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR of a sample's image.

    Raises:
        ManifestError: missing or undecodable image.
    """
    image = cv2.imread(str(sample.image), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ManifestError(f"{sample.id}: cannot read image {sample.image}")
    return image

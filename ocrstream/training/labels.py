"""Labelled lines for training: ``ocrstream model label-export OUT [--manifest M ...] [--from-store]``.

Two sources, one output format (:mod:`ocrstream.training.manifest`: ``OUT/lines.jsonl`` + ``OUT/img/``):

* any ``{image, text}`` JSONL manifest (images copied, other keys kept);
* the lines of stored documents that a person corrected: regions whose ``verified_text`` is set
  (migration ``0008_verified_text.sql``; a reviewer writes it, e.g.
  ``UPDATE regions SET verified_text = '...', verified_at = now() WHERE document_id = ... AND region_id = ...``),
  with their crop (``crop_key``, a crop reference: :mod:`ocrstream.storage.crops`) read from the
  object store and written as PNG. Bounded by ``limit`` lines.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from ocrstream.settings import Settings
from ocrstream.training.manifest import read_manifest, write_manifest

__all__ = ["export_labels", "verified_lines"]

VERIFIED = """
SELECT document_id, region_id, crop_key, verified_text, verified_at FROM regions
WHERE verified_text IS NOT NULL AND crop_key IS NOT NULL AND ($1::timestamptz IS NULL OR verified_at >= $1)
ORDER BY verified_at, document_id, region_id LIMIT $2
"""


async def verified_lines(settings: Settings, out: Path, *, since: datetime | None = None,
                         limit: int = 100_000) -> list[dict]:
    """Download the crops of verified regions into ``out/img``; their manifest records."""
    import asyncpg
    import cv2

    from ocrstream.storage.crops import parse_reference, unpack_crops
    from ocrstream.storage.objectstore import ObjectStore

    store = ObjectStore(settings)
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(VERIFIED, since, limit)
    finally:
        await conn.close()
    (out / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for row in rows:
        name = "img/" + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{row['document_id']}_{row['region_id']}") + ".png"
        key, span = parse_reference(row["crop_key"])  # a crop in a page's crop pack, or an older PNG object
        data = await store.get(key)
        (out / name).write_bytes(data if span is None else cv2.imencode(".png", unpack_crops(data, [span])[0])[1].tobytes())
        records.append({"id": f"{row['document_id']}/{row['region_id']}", "image": name, "text": row["verified_text"],
                        "src": f"store:{row['document_id']}/{row['region_id']}",
                        "verified_at": row["verified_at"].isoformat() if row["verified_at"] else None})
    return records


def export_labels(out: str | Path, *, manifests: Sequence[str] = (), settings: Settings | None = None,
                  since: str | None = None) -> int:
    """Write the lines of ``manifests`` and (with ``settings``) the verified stored lines to
    ``out/lines.jsonl`` + ``out/img/``; returns the number of lines.

    Raises:
        ocrstream.training.manifest.ManifestError: a bad manifest line.
        ValueError: ``since`` is not an ISO 8601 time.
    """
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for m in manifests:
        for k, s in enumerate(read_manifest(m)):
            name = f"img/{Path(m).stem}_{k:06d}{s.image.suffix}"
            (out / name).write_bytes(s.image.read_bytes())
            records.append({"id": s.id, "image": name, "text": s.text, **s.extra})
    if settings is not None:
        when = datetime.fromisoformat(since) if since else None
        records += asyncio.run(verified_lines(settings, out, since=when))
    return write_manifest(out / "lines.jsonl", records)

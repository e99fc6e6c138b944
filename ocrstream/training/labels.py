"""Labelled lines for training: ``ocrstream model label-export OUT [--manifest M ...] [--from-store]``.

Two sources, one output format (:mod:`ocrstream.training.manifest`: ``OUT/lines.jsonl`` + ``OUT/img/``):

* any ``{image, text}`` JSONL manifest (images copied, other keys kept);
* the lines of stored documents that a person corrected: regions whose ``verified_text`` is set
  (migration ``0008_verified_text.sql``; a reviewer sets it on the query API's review page or
  ``POST /v1/regions/{id}/verify``, services/store/review.py), with their crop (``crop_key``, a
  crop reference: :mod:`ocrstream.storage.crops`) read from the object store and written as PNG;
  a crop no longer in the object store is cut from the original page instead (its box, no margin).
  Bounded by ``limit`` lines.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ocrstream.settings import Settings
from ocrstream.training.manifest import read_manifest, write_manifest

__all__ = ["export_labels", "verified_lines"]

VERIFIED = """
SELECT r.document_id, r.region_id, r.crop_key, r.verified_text, r.verified_at, r.verified_by, r.page_index,
       r.x0, r.y0, r.x1, r.y1, d.object_key, p.width, p.height
FROM regions r JOIN documents d ON d.document_id = r.document_id
LEFT JOIN pages p ON p.document_id = r.document_id AND p.page_index = r.page_index
WHERE r.verified_text IS NOT NULL AND (r.crop_key IS NOT NULL OR d.object_key IS NOT NULL)
  AND ($1::timestamptz IS NULL OR r.verified_at >= $1)
ORDER BY r.verified_at, r.document_id, r.region_id LIMIT $2
"""


async def verified_lines(settings: Settings, out: Path, *, since: datetime | None = None,
                         limit: int = 100_000) -> list[dict]:
    """Download the crops of verified regions into ``out/img``; their manifest records.

    A crop missing from the object store is cut from the original page (``MissingObjectError``
    only when that is gone too)."""
    import asyncpg
    import cv2

    from ocrstream.errors import MissingObjectError
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
    pages: dict[tuple[str, int], Any] = {}
    for row in rows:
        name = "img/" + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{row['document_id']}_{row['region_id']}") + ".png"
        try:
            if row["crop_key"] is None:
                raise MissingObjectError(f"region {row['region_id']} has no stored crop")
            key, span = parse_reference(row["crop_key"])  # a crop in a page's crop pack, or an older PNG object
            data = await store.get(key)
            png = data if span is None else cv2.imencode(".png", unpack_crops(data, [span])[0])[1].tobytes()
        except MissingObjectError:
            if not row["object_key"] or row["width"] is None:
                raise
            png = await _from_original(store, row, settings, pages)
        (out / name).write_bytes(png)
        records.append({"id": f"{row['document_id']}/{row['region_id']}", "image": name, "text": row["verified_text"],
                        "src": f"store:{row['document_id']}/{row['region_id']}", "verified_by": row["verified_by"],
                        "verified_at": row["verified_at"].isoformat() if row["verified_at"] else None})
    return records


async def _from_original(store: Any, row: Any, settings: Settings, pages: dict[tuple[str, int], Any]) -> bytes:
    """PNG of a region's box cut from its original page (decoded once per page, in a thread)."""
    from ocrstream.ocr.decode import Budget
    from services.store.review import cut_crop, decode_page

    key = (row["object_key"], row["page_index"])
    if key not in pages:
        pages.clear()  # one decoded page in memory at a time (rows come in verified order)
        pages[key] = await asyncio.to_thread(decode_page, await store.get(row["object_key"]), row["page_index"],
                                             Budget.from_settings(settings))
    return await asyncio.to_thread(cut_crop, pages[key], [row["x0"], row["y0"], row["x1"], row["y1"]],
                                   (row["width"], row["height"]), margin_px=0, max_pixels=1 << 40)


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

"""Review: the regions that need a person, and their corrections (``verified_text``).

Read and written by the query API (services/store/review.py: ``GET /v1/review``,
``POST /v1/regions/{id}/verify``, the ``/review`` page). A region needs a person when the
store flagged it (``needs_review``: low confidence or a field that did not validate) or, when
the request gives a ``threshold``, when its confidence is at or under it (1: every region); a
region already verified does not. Oldest documents first (``stored_at``), then page and reading order.

Verifying stores ``verified_text``, ``verified_by`` (the API key's name) and ``verified_at``; a
region verified before keeps its earlier text in ``region_corrections`` (migration 0013), at most
``history_max`` rows per region (the oldest are dropped in the same transaction).

Every function takes ``db``: an asyncpg Pool or Connection (verify: a Pool whose connections may
write those columns, :func:`ocrstream.storage.db.create_review_pool`), and raises asyncpg's errors.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ocrstream.errors import InvalidRequestError, UnknownRegionError

#: Rows of one page of ``GET /v1/review`` at most.
MAX_REVIEW_PAGE = 200


@dataclass(frozen=True)
class ReviewQuery:
    """Filters and page of the review queue.

    ``threshold``: also regions with a confidence at or under it (in [0, 1]; 1: every region; None: only flagged
    ones); ``template``: the documents' template name; ``field``: a template or receipt field
    name of the region; ``since``: documents stored at or after; ``document``: one document id;
    ``limit`` (1..:data:`MAX_REVIEW_PAGE`) rows after ``offset``.

    Raises InvalidRequestError (at construction) for values out of range.
    """

    threshold: float | None = None
    template: str | None = None
    field: str | None = None
    since: datetime | None = None
    document: str | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InvalidRequestError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 1 <= self.limit <= MAX_REVIEW_PAGE:
            raise InvalidRequestError(f"limit must be in 1..{MAX_REVIEW_PAGE}, got {self.limit}")
        if self.offset < 0:
            raise InvalidRequestError(f"offset must be >= 0, got {self.offset}")


_QUEUE_WHERE = """
FROM regions r JOIN documents d ON d.document_id = r.document_id
WHERE d.status = 'done' AND r.verified_text IS NULL
  AND (r.needs_review OR ($1::real IS NOT NULL AND r.confidence <= $1))
  AND ($2::text IS NULL OR d.template = $2)
  AND ($3::text IS NULL OR r.field->>'name' = $3)
  AND ($4::timestamptz IS NULL OR d.stored_at >= $4)
  AND ($5::text IS NULL OR d.document_id = $5)
"""

_REGION_COLUMNS = """r.id, r.document_id, r.region_id, r.page_index, r.reading_order, r.x0, r.y0, r.x1, r.y1,
 r.text, r.raw_text, r.confidence, r.char_probs, r.needs_review, r.reason, r.field, r.verified_text,
 r.verified_by, r.verified_at, d.filename, d.template, d.stored_at"""


def marked_reading(text: str, char_probs: list[float] | None, threshold: float) -> list[dict[str, Any]]:
    """``text`` as runs ``{"text", "low"}``: ``low`` where the recogniser's probability of each
    character is under ``threshold``. One unmarked run when ``char_probs`` is None or does not
    have one entry per character (e.g. post-processing changed the length)."""
    if not char_probs or len(char_probs) != len(text):
        return [{"text": text, "low": False}] if text else []
    runs: list[dict[str, Any]] = []
    for ch, p in zip(text, char_probs):
        low = p < threshold
        if runs and runs[-1]["low"] == low:
            runs[-1]["text"] += ch
        else:
            runs.append({"text": ch, "low": low})
    return runs


def _item(r: Any, char_threshold: float) -> dict[str, Any]:
    probs = json.loads(r["char_probs"]) if r["char_probs"] else None
    raw = r["raw_text"] if r["raw_text"] is not None else r["text"]
    return {"id": r["id"], "document_id": r["document_id"], "region_id": r["region_id"],
            "page_index": r["page_index"], "order": r["reading_order"],
            "box": [r["x0"], r["y0"], r["x1"], r["y1"]], "text": r["text"], "raw_text": raw,
            "confidence": r["confidence"], "needs_review": r["needs_review"], "reason": r["reason"],
            "field": json.loads(r["field"])["name"] if r["field"] else None,
            "reading": marked_reading(raw, probs, char_threshold),
            "verified_text": r["verified_text"], "verified_by": r["verified_by"],
            "verified_at": r["verified_at"].isoformat() if r["verified_at"] else None,
            "filename": r["filename"], "template": r["template"], "stored_at": r["stored_at"].isoformat()}


async def review_queue(db: Any, query: ReviewQuery, char_threshold: float = 0.9) -> dict[str, Any]:
    """One page of the regions needing a person: ``{"total", "offset", "next_offset", "items"}``,
    oldest document first; ``next_offset`` is None on the last page. Each item has the region's
    ``id``, document, box (page px), text, raw text, confidence, field and ``reading``
    (:func:`marked_reading` of the raw text, characters under ``char_threshold`` marked)."""
    args = (query.threshold, query.template, query.field, query.since, query.document)
    total = int(await db.fetchval("SELECT count(*) " + _QUEUE_WHERE, *args))
    rows = await db.fetch(f"SELECT {_REGION_COLUMNS} {_QUEUE_WHERE}"
                          " ORDER BY d.stored_at, r.document_id, r.page_index, r.reading_order, r.id"
                          " LIMIT $6 OFFSET $7", *args, query.limit, query.offset)
    end = query.offset + len(rows)
    return {"total": total, "offset": query.offset, "next_offset": end if end < total else None,
            "items": [_item(r, char_threshold) for r in rows]}


async def load_region(db: Any, region_id: int, char_threshold: float = 0.9) -> dict[str, Any]:
    """One region as a review item (see :func:`review_queue`) plus its document's ``object_key``
    and the page's ``width``/``height``. Raises UnknownRegionError."""
    row = await db.fetchrow(f"SELECT {_REGION_COLUMNS}, d.object_key, p.width, p.height"
                            " FROM regions r JOIN documents d ON d.document_id = r.document_id"
                            " JOIN pages p ON p.document_id = r.document_id AND p.page_index = r.page_index"
                            " WHERE r.id = $1", region_id)
    if row is None:
        raise UnknownRegionError(f"no region {region_id}")
    return {**_item(row, char_threshold), "object_key": row["object_key"], "page_width": row["width"],
            "page_height": row["height"]}


def check_text(text: str, max_chars: int) -> str:
    """A correction as stored: NFC, without surrounding whitespace.

    Raises InvalidRequestError: empty (or only whitespace), over ``max_chars`` characters, or
    holding a control character (NUL, line breaks: one region is one line).
    """
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise InvalidRequestError("the verified text is empty")
    if len(text) > max_chars:
        raise InvalidRequestError(f"the verified text has {len(text)} characters; at most {max_chars}")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        raise InvalidRequestError(f"the verified text holds the control character U+{ord(bad):04X}")
    return text


async def verify_region(pool: Any, region_id: int, text: str, who: str | None, *, max_chars: int = 1000,
                        history_max: int = 20) -> dict[str, Any]:
    """Store ``text`` as region ``region_id``'s verified text, by ``who`` (an API key's name), now.

    An earlier verified text moves to ``region_corrections`` (newest ``history_max`` kept).
    Returns ``{"id", "document_id", "region_id", "verified_text", "verified_by", "verified_at",
    "history"}`` (``history``: earlier corrections kept for this region).

    Raises:
        InvalidRequestError: the text fails :func:`check_text`.
        UnknownRegionError: no such region.
    """
    text = check_text(text, max_chars)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT document_id, region_id, verified_text, verified_by, verified_at"
                                  " FROM regions WHERE id = $1 FOR UPDATE", region_id)
        if row is None:
            raise UnknownRegionError(f"no region {region_id}")
        doc_id, reg_id = row["document_id"], row["region_id"]
        if row["verified_text"] is not None:
            await conn.execute("INSERT INTO region_corrections (document_id, region_id, text, verified_by,"
                               " verified_at, replaced_by) VALUES ($1, $2, $3, $4, $5, $6)",
                               doc_id, reg_id, row["verified_text"], row["verified_by"], row["verified_at"], who)
            await conn.execute("DELETE FROM region_corrections WHERE document_id = $1 AND region_id = $2"
                               " AND id NOT IN (SELECT id FROM region_corrections WHERE document_id = $1"
                               " AND region_id = $2 ORDER BY id DESC LIMIT $3)", doc_id, reg_id, history_max)
        done = await conn.fetchrow("UPDATE regions SET verified_text = $2, verified_by = $3, verified_at = now()"
                                   " WHERE id = $1 RETURNING verified_at", region_id, text, who)
        history = await conn.fetchval("SELECT count(*) FROM region_corrections"
                                      " WHERE document_id = $1 AND region_id = $2", doc_id, reg_id)
    return {"id": region_id, "document_id": doc_id, "region_id": reg_id, "verified_text": text,
            "verified_by": who, "verified_at": done["verified_at"].isoformat(), "history": int(history)}


async def corrections(db: Any, region_id: int) -> list[dict[str, Any]]:
    """The earlier corrections of region ``region_id``, newest first: ``{"text", "verified_by",
    "verified_at", "replaced_by", "replaced_at"}``. Raises UnknownRegionError."""
    row = await db.fetchrow("SELECT document_id, region_id FROM regions WHERE id = $1", region_id)
    if row is None:
        raise UnknownRegionError(f"no region {region_id}")
    rows = await db.fetch("SELECT text, verified_by, verified_at, replaced_by, replaced_at FROM region_corrections"
                          " WHERE document_id = $1 AND region_id = $2 ORDER BY id DESC",
                          row["document_id"], row["region_id"])
    return [{"text": r["text"], "verified_by": r["verified_by"],
             "verified_at": r["verified_at"].isoformat() if r["verified_at"] else None,
             "replaced_by": r["replaced_by"], "replaced_at": r["replaced_at"].isoformat()} for r in rows]

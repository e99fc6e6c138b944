"""What documents cost, in PostgreSQL (table ``document_costs``, migration 0017): one row per
stored result, written by the store in its transaction, read by the query API
(``GET /v1/documents/{id}``: ``costs``) and ``ocrstream usage``.

The figures are the results event's ``costs`` (each stage's CPU seconds, wall seconds, bytes in
and out: ocrstream/streaming/costs.py) summed, with the breakdown kept as ``stages``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

RECORD = """
INSERT INTO document_costs (document_id, version, status, api_key, door, template, pages, cpu_s, wall_s,
    bytes_in, bytes_out, stages)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb)
ON CONFLICT (document_id, version) DO UPDATE SET status = EXCLUDED.status, pages = EXCLUDED.pages,
    cpu_s = EXCLUDED.cpu_s, wall_s = EXCLUDED.wall_s, bytes_in = EXCLUDED.bytes_in,
    bytes_out = EXCLUDED.bytes_out, stages = EXCLUDED.stages, stored_at = now()
"""

#: ``ocrstream usage --by``: the column each grouping reads (fixed text, never user input in SQL).
GROUPS: Final = {"key": "coalesce(api_key, '-')", "door": "coalesce(door, '-')",
                 "template": "coalesce(template, '-')"}
FIELDS: Final = ("cpu_s", "wall_s", "bytes_in", "bytes_out")


def sums(stages: list[dict[str, Any]]) -> dict[str, float]:
    """Totals of a ``costs`` list of JSON objects: ``cpu_s``, ``wall_s`` (s), ``bytes_in``, ``bytes_out``."""
    return {k: sum(float(s.get(k) or 0) for s in stages) for k in FIELDS}


async def record(conn: Any, document_id: str, version: str, status: str, *, api_key: str | None,
                 door: str | None, template: str | None, pages: int, stages: list[dict[str, Any]]) -> None:
    """Write (or, for a result stored again after a failed publish, rewrite) the cost of
    ``document_id``'s ``version`` (in the caller's transaction)."""
    total = sums(stages)
    await conn.execute(RECORD, document_id, version, status, api_key, door, template, pages, total["cpu_s"],
                       total["wall_s"], int(total["bytes_in"]), int(total["bytes_out"]), json.dumps(stages))


async def document_cost(db: Any, document_id: str, version: str | None) -> dict[str, Any] | None:
    """The cost of a document's ``version``: ``{cpu_s, wall_s, bytes_in, bytes_out, stages}``, or None."""
    row = await db.fetchrow("SELECT cpu_s, wall_s, bytes_in, bytes_out, stages FROM document_costs"
                            " WHERE document_id = $1 AND version = $2", document_id, version)
    if row is None:
        return None
    return {**{k: row[k] for k in FIELDS}, "stages": json.loads(row["stages"])}


async def usage(db: Any, since: datetime, by: str) -> list[dict[str, Any]]:
    """Costs of the results stored at or after ``since``, grouped ``by`` key, door or template
    (:data:`GROUPS`), most CPU first: ``{name, documents, pages, cpu_s, wall_s, bytes_in,
    bytes_out}``. Raises ValueError for another grouping."""
    if by not in GROUPS:
        raise ValueError(f"usage by {by!r}: one of {', '.join(GROUPS)}")
    rows = await db.fetch(
        f"SELECT {GROUPS[by]} AS name, count(*) AS documents, sum(pages) AS pages, sum(cpu_s) AS cpu_s,"
        " sum(wall_s) AS wall_s, sum(bytes_in) AS bytes_in, sum(bytes_out) AS bytes_out"
        " FROM document_costs WHERE stored_at >= $1 GROUP BY 1 ORDER BY sum(cpu_s) DESC, 1", since)
    return [{k: (float(v) if k in FIELDS else v) for k, v in dict(r).items()} for r in rows]


async def costs_of(db: Any, document_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest cost row of each of ``document_ids``: ``{id: {cpu_s, ..., stages}}`` (bench_e2e)."""
    rows = await db.fetch("SELECT DISTINCT ON (document_id) document_id, cpu_s, wall_s, bytes_in, bytes_out, stages"
                          " FROM document_costs WHERE document_id = ANY($1::text[])"
                          " ORDER BY document_id, stored_at DESC", document_ids)
    return {r["document_id"]: {**{k: r[k] for k in FIELDS}, "stages": json.loads(r["stages"])} for r in rows}


__all__ = ["GROUPS", "costs_of", "document_cost", "record", "sums", "usage"]

"""Search query time on generated stored documents (ocrstream/storage/search.py).

    .venv/bin/python bench/bench_search.py [--documents 10000] [--repeat 20] [--dsn DSN]

Generates ``--documents`` receipt-like documents (deterministic: seed 11), one or two pages of
20-30 regions of 2-5 words each, drawn from the English word list shipped with symspellpy plus
shop words, prices and codes; every 10th document is a ``lab-report`` form with template fields.
They are bulk-loaded (COPY) into a fresh database ``ocrstream_bench`` on the embedded PostgreSQL
(started in a temporary folder; or on ``--dsn``'s server) with the store's migrations, then each
query below runs ``--repeat`` times through :func:`ocrstream.storage.search.search` (the code path
of ``GET /v1/search``). Prints rows loaded, load time, and per query: matching pages, median and
95th-percentile wall milliseconds, and which GIN indexes the plan uses. Nothing is timed-asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from ocrstream.storage.migrate import apply_migrations  # noqa: E402
from ocrstream.storage.search import SEARCH_SQL, SearchQuery, search  # noqa: E402

BENCH_DB = "ocrstream_bench"
SHOP = ["SDN", "BHD", "TOTAL", "GST", "CASH", "CHANGE", "INVOICE", "RECEIPT", "QTY", "PRICE", "AMOUNT",
        "ROUNDING", "SUBTOTAL", "DISCOUNT", "TAX", "MART", "TRADING", "ENTERPRISE", "RESTORAN", "JALAN"]


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Words from symspellpy's packaged English frequency list (its first ``size``) plus shop words."""
    from importlib import resources

    path = resources.files("symspellpy").joinpath("frequency_dictionary_en_82_765.txt")
    words = [line.split()[0] for line in path.read_text().splitlines()[:size]]
    return words + SHOP * 50


def generate(n_docs: int, rng: random.Random) -> tuple[list, list, list]:
    """Rows for documents, pages, regions (the columns COPY fills)."""
    vocab = vocabulary(rng)
    now = datetime.now(timezone.utc)
    docs, pages, regions = [], [], []
    for d in range(n_docs):
        doc_id = f"bench-{d:06d}"
        template = "lab-report" if d % 10 == 0 else None
        fields = json.dumps({"glucose": {"value": round(rng.uniform(3, 9), 1), "text": "", "valid": True}}) if template else None
        lines_all = []
        for p in range(rng.choice((1, 1, 1, 2))):
            pages.append((doc_id, p, 1240, 1754))
            for i in range(rng.randint(20, 30)):
                words = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
                if rng.random() < 0.2:
                    words.append(f"{rng.uniform(1, 500):.2f}")
                text = " ".join(w.upper() if rng.random() < 0.3 else w for w in words)
                lines_all.append(text)
                y = 40 + 55 * i
                regions.append((doc_id, f"p{p}-r{i}", p, i, i, 60.0, float(y), 60.0 + 22 * len(text), y + 40.0,
                                text, 0.97, "[]", text, 0))
        stored = now - timedelta(minutes=n_docs - d)
        docs.append((doc_id, "done", "cli", f"{doc_id}.jpg", "\n".join(lines_all), stored, stored.isoformat(),
                     template, fields))
    return docs, pages, regions


async def load(conn: asyncpg.Connection, n_docs: int) -> int:
    rng = random.Random(11)
    docs, pages, regions = generate(n_docs, rng)
    await conn.copy_records_to_table("documents", records=docs, columns=[
        "document_id", "status", "source", "filename", "text", "stored_at", "version", "template", "fields"])
    await conn.copy_records_to_table("pages", records=pages, columns=["document_id", "page_index", "width", "height"])
    await conn.copy_records_to_table("regions", records=regions, columns=[
        "document_id", "region_id", "page_index", "line_index", "reading_order", "x0", "y0", "x1", "y1",
        "text", "confidence", "words", "raw_text", "block_index"])
    for table in ("documents", "pages", "regions"):
        await conn.execute(f"VACUUM ANALYZE {table}")
    return len(regions)


QUERIES = [
    ("one common word", SearchQuery("total")),
    ("one rare word", SearchQuery("thermodynamics")),
    ("two words", SearchQuery("cash change")),
    ('phrase "..."', SearchQuery('"sdn bhd"')),
    ("OCR-noisy word (trigram)", SearchQuery("INV0ICE")),
    ("noisy, no exact lexeme", SearchQuery("restoran jalam")),
    ("word + template field filter", SearchQuery("total", template="lab-report", fields={"glucose": "5.5"})),
    ("word + date filter (last 1000 min)", SearchQuery("total", since=datetime.now(timezone.utc) - timedelta(minutes=1000))),
    ("common word, result page 5", SearchQuery("total", limit=20, offset=80)),
]


async def indexes_used(conn: asyncpg.Connection, q: SearchQuery) -> str:
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + SEARCH_SQL, q.q, q.status, q.since, q.until,
                               q.template, json.dumps(q.fields), q.limit, q.offset)
    text = json.dumps(plan)
    return ",".join(i for i in ("regions_tsv_idx", "regions_trgm_idx") if i in text) or "none (seq scan)"


async def bench(dsn: str, n_docs: int, repeat: int) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        await admin.execute(f"CREATE DATABASE {BENCH_DB}")
    finally:
        await admin.close()
    bench_dsn = dsn.rsplit("/", 1)[0] + "/" + BENCH_DB
    conn = await asyncpg.connect(bench_dsn)
    pool = await asyncpg.create_pool(bench_dsn, min_size=1, max_size=1)
    try:
        await apply_migrations(conn)
        t0 = time.perf_counter()
        n_regions = await load(conn, n_docs)
        print(f"loaded {n_docs} documents, {n_regions} regions in {time.perf_counter() - t0:.1f} s "
              f"(COPY + GIN index maintenance + VACUUM ANALYZE)")
        print(f"\n{'query':38s} {'pages':>7s} {'median ms':>10s} {'p95 ms':>8s}  indexes")
        for label, q in QUERIES:
            result = await search(pool, q)  # warm-up
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                await search(pool, q)
                times.append(1000 * (time.perf_counter() - t))
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            print(f"{label:38s} {result['total']:7d} {statistics.median(times):10.1f} {p95:8.1f}  "
                  f"{await indexes_used(conn, q)}")
    finally:
        await pool.close()
        await conn.close()
        admin = await asyncpg.connect(dsn)
        await admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dsn", default=None, help="a PostgreSQL server (default: an embedded one, started here)")
    args = parser.parse_args(argv)
    if args.dsn:
        asyncio.run(bench(args.dsn, args.documents, args.repeat))
        return 0
    from ocrstream.devstack import EmbeddedStack

    with tempfile.TemporaryDirectory(prefix="ocrs-bench-") as tmp, EmbeddedStack(Path(tmp)) as stack:
        asyncio.run(bench(stack.endpoints.postgres_dsn, args.documents, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())

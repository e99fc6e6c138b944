"""Search query time on generated stored documents, and the trigram threshold measured on real OCR errors
(ocrstream/storage/search.py).

    .venv/bin/python bench/bench_search.py [--documents 10000] [--repeat 20] [--dsn DSN]
    .venv/bin/python bench/bench_search.py --ocr-errors [--dsn DSN]

``--ocr-errors`` (needs ``../shared/data/sroie-dev``, skipped without it): the 1500 dev line crops read
by our recogniser and post-processor (readings cached by ``bench/bench_postprocess.py``), aligned word
by word with their ground truth (difflib); every word the OCR misread (case-insensitively; the true
word has >= 3 characters and a letter) is a pair (true word, misread word). For each threshold of
``pg_trgm.word_similarity_threshold`` it prints, over the pairs, computed by PostgreSQL's own
``word_similarity``: the recall (the line holding the misread word matches the true word typed as a
query: the user searches ``INVOICE``, the stored text says ``INV0ICE``), the same the other way (the
misread word typed, the correctly read lines searched), and the flood: lines matched per query whose
ground truth does not hold the word (median and mean over queries), and the precision of all matched
lines. The row of :data:`ocrstream.storage.search.WORD_SIMILARITY_THRESHOLD` is marked.

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
from ocrstream.storage.search import (  # noqa: E402
    SEARCH_SQL,
    WORD_SIMILARITY_THRESHOLD,
    SearchQuery,
    search,
    trigram_words,
)

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
                               q.template, json.dumps(q.fields), q.limit, q.offset, trigram_words(q.q))
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


DEV = REPO.parent / "shared" / "data" / "sroie-dev"
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def _words(text: str) -> list[str]:
    return text.upper().split()


def _alnum(word: str) -> str:
    """What pg_trgm sees of a word: its letters and digits (punctuation separates words)."""
    return "".join(c for c in word if c.isalnum())


def ocr_error_pairs(lines: list[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """``(line index, true word, misread word)`` for every word the OCR read wrong, from the dev
    lines' ``(ground truth, stored reading)``: a difflib alignment of the two word lists, one pair per
    word of an equal-length ``replace`` block; the true word has >= 3 characters and a letter, and the
    two differ in letters or digits (not only in punctuation, which pg_trgm ignores)."""
    import difflib

    pairs = []
    for i, (ref, hyp) in enumerate(lines):
        rw, hw = _words(ref), _words(hyp)
        for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=rw, b=hw, autojunk=False).get_opcodes():
            if op == "replace" and a1 - a0 == b1 - b0:
                pairs += [(i, t, m) for t, m in zip(rw[a0:a1], hw[b0:b1])
                          if len(t) >= 3 and any(c.isalpha() for c in t) and _alnum(t) != _alnum(m)]
    return pairs


def dev_lines() -> list[tuple[str, str]]:
    """The dev lines' ``(ground truth, stored text)``: our recogniser's readings (bench_postprocess's
    cache) through the store's post-processor, as the store keeps them."""
    sys.path.insert(0, str(REPO / "bench"))
    from bench_postprocess import load_lines

    from ocrstream.ocr.postprocess.processor import PostProcessor

    pp = PostProcessor()
    return [(x.ref, pp.correct(x.text, x.confidence, x.char_probs).text) for x in load_lines(None, "latin", False)]


async def similarity_matrix(conn: asyncpg.Connection, queries: list[str], texts: list[str]) -> list[list[float]]:
    """``word_similarity(query, text)`` by PostgreSQL (pg_trgm) for every query and text."""
    rows = await conn.fetch(
        "SELECT q.i, array_agg(word_similarity(q.w, t.x) ORDER BY t.j) AS sims "
        "FROM unnest($1::text[]) WITH ORDINALITY q(w, i), unnest($2::text[]) WITH ORDINALITY t(x, j) "
        "GROUP BY q.i ORDER BY q.i", queries, texts)
    return [list(r["sims"]) for r in rows]


def threshold_rows(sims: list[list[float]], targets: list[int], relevant: list[set[int]]) -> list[str]:
    """Recall of each query's target line, and the lines matched beyond the relevant ones, per threshold."""
    out = []
    for t in THRESHOLDS:
        recall = sum(s[j] >= t for s, j in zip(sims, targets)) / len(targets)
        extra = [sum(1 for k, v in enumerate(s) if v >= t and k not in rel) for s, rel in zip(sims, relevant)]
        matched = sum(sum(v >= t for v in s) for s in sims)
        precision = 1 - sum(extra) / matched if matched else 1.0
        mark = "  <- WORD_SIMILARITY_THRESHOLD" if abs(t - WORD_SIMILARITY_THRESHOLD) < 1e-9 else ""
        out.append(f"{t:9.2f} {100 * recall:8.1f} % {statistics.median(extra):10.0f} {statistics.mean(extra):9.1f} "
                   f"{100 * precision:9.1f} %{mark}")
    return out


async def bench_ocr_errors(dsn: str) -> None:
    lines = dev_lines()
    pairs = ocr_error_pairs(lines)
    refs = [set(_words(ref)) for ref, _ in lines]
    print(f"{len(lines)} dev lines, {len(pairs)} misread words (true word >= 3 characters with a letter; not punctuation only), "
          f"e.g. {', '.join(f'{t}->{m}' for _, t, m in pairs[:6])}")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        header = f"{'threshold':>9s} {'recall':>10s} {'extra med':>10s} {'extra mean':>9s} {'precision':>11s}"
        # The user types the true word; the stored (OCR) text holds the misread one.
        sims = await similarity_matrix(conn, [t for _, t, _ in pairs], [hyp for _, hyp in lines])
        relevant = [{k for k, words in enumerate(refs) if t in words} for _, t, _ in pairs]
        print("\ntrue word typed, stored OCR lines searched (the misread line must match):\n" + header)
        print("\n".join(threshold_rows(sims, [i for i, _, _ in pairs], relevant)))
        # The misread word typed (INV0ICE), the lines read right searched: the ground truth as stored text.
        sims = await similarity_matrix(conn, [m for _, _, m in pairs], [ref for ref, _ in lines])
        print("\nmisread word typed, correctly read lines searched (its true line must match):\n" + header)
        print("\n".join(threshold_rows(sims, [i for i, _, _ in pairs], relevant)))
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dsn", default=None, help="a PostgreSQL server (default: an embedded one, started here)")
    parser.add_argument("--ocr-errors", action="store_true",
                        help="measure the trigram threshold on the dev lines' OCR errors instead")
    args = parser.parse_args(argv)
    if args.ocr_errors and not (DEV / "lines.jsonl").is_file():
        print(f"skipped: no dev lines at {DEV} (../shared beside the checkout)")
        return 0
    run = (lambda dsn: bench_ocr_errors(dsn)) if args.ocr_errors else (lambda dsn: bench(dsn, args.documents, args.repeat))
    if args.dsn:
        asyncio.run(run(args.dsn))
        return 0
    from ocrstream.devstack import EmbeddedStack

    with tempfile.TemporaryDirectory(prefix="ocrs-bench-") as tmp, EmbeddedStack(Path(tmp)) as stack:
        asyncio.run(run(stack.endpoints.postgres_dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())

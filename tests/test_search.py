"""Search (ocrstream/storage/search.py) against the real embedded PostgreSQL: full text, OCR-noisy
words by trigram similarity, regions with boxes, snippets, filters and pagination."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ocrstream.contracts import events
from ocrstream.ocr.postprocess.processor import PostProcessor
from ocrstream.storage.search import WORD_SIMILARITY_THRESHOLD, SearchQuery, search
from services.store.stage import StoreStage

pytestmark = pytest.mark.slow


def stored_event(doc_id: str, pages: list[list[str]], template: str | None = None):
    """A recognized event: one region per line (confident, so post-processing keeps the text)."""
    return events.from_json_object(events.RECOGNIZED, stored_dict(doc_id, pages, template))


def stored_dict(doc_id: str, pages: list[list[str]], template: str | None = None) -> dict:
    """:func:`stored_event` as a dict (before validation)."""
    regions = []
    for p, lines in enumerate(pages):
        for i, text in enumerate(lines):
            box = [10.0, 40.0 * i + 10, 10.0 + 20 * len(text), 40.0 * i + 40]
            regions.append({"region_id": f"p{p}-r{i}", "page_index": p, "line_index": i, "order": i,
                            "box": box, "crop_key": f"crops/{doc_id}/{p}-{i}", "text": text, "confidence": 0.999})
    return {
        "schema": events.RECOGNIZED, "document_id": doc_id,
        "document": {"object_key": "originals/ab/" + "ab" * 32, "content_sha256": "ab" * 32, "size_bytes": 10,
                     "filename": f"{doc_id}.png", "source": "cli", "template": template},
        "timestamps": {k: events.now_iso() for k in ("submitted", "ingested", "preprocessed", "recognized")},
        "pages": [{"page_index": p, "width": 800, "height": 600} for p in range(len(pages))],
        "recognizer": {"name": "ppocr", "provider": "CPUExecutionProvider"}, "regions": regions}


@pytest.fixture(scope="module")
async def corpus(stack_settings):
    stage = StoreStage(stack_settings)
    await stage.setup()
    tag = "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:6])  # letters: "6e0a" would parse as a number
    since = datetime.now(timezone.utc) - timedelta(seconds=1)  # stored_at is in milliseconds
    docs = {
        "invoice": [[f"ZEPHYRINE {tag} TRADING", "INVOICE NO 20931", "TOTAL RM 125.40"]],
        "memo": [[f"Memo {tag}", "Meeting moved to Friday"], [f"ZEPHYRINE {tag} minutes", "page two"]],
        "other": [[f"ZEPHYRINE {tag} ZEPHYRINE {tag}", "HELLO"]],
        "markup": [[f"QUOKKA {tag} R&D 5<6 <b>"]],
    }
    ids = {name: f"search-{name}-{tag}" for name in docs}
    for name, pages in docs.items():
        await stage.store_done(stored_event(ids[name], pages))
    yield stage.pool, ids, tag, since
    await stage.teardown()


async def test_full_text_finds_pages_with_regions_boxes_and_snippets(corpus):
    pool, ids, tag, _ = corpus
    result = await search(pool, SearchQuery(f"zephyrine {tag}"))
    assert result["total"] == 3  # invoice p0, memo p1, other p0 (twice the words: ranked first)
    assert (result["hits"][0]["document_id"], result["hits"][0]["page_index"]) == (ids["other"], 0)
    memo = next(h for h in result["hits"] if h["document_id"] == ids["memo"])
    assert memo["page_index"] == 1 and [r["text"] for r in memo["regions"]] == [f"ZEPHYRINE {tag} minutes"]
    assert memo["regions"][0]["box"] == [10.0, 10.0, 10.0 + 20 * len(f"ZEPHYRINE {tag} minutes"), 40.0]
    assert "<mark>ZEPHYRINE</mark>" in memo["snippet"] and f"<mark>{tag}</mark>" in memo["snippet"]


async def test_ocr_noisy_spelling_is_found_by_trigram_similarity(corpus):
    pool, ids, tag, _ = corpus
    result = await search(pool, SearchQuery(f"ZEPHYRlNE {tag} TRADlNG"))  # l for I, as OCR misreads
    assert result["hits"][0]["document_id"] == ids["invoice"], result
    assert "<mark>" in result["hits"][0]["snippet"]


async def test_one_misread_character_in_a_short_word_is_found(corpus):
    """INV0ICE finds INVOICE: word similarity 0.45, under PostgreSQL's default threshold (0.6) and over
    the one each search sets (WORD_SIMILARITY_THRESHOLD, measured by bench/bench_search.py --ocr-errors)."""
    pool, ids, _, since = corpus
    similarity = await pool.fetchval("SELECT word_similarity('INV0ICE', 'INVOICE NO 20931')")
    assert WORD_SIMILARITY_THRESHOLD <= similarity < 0.6, similarity
    assert float(await pool.fetchval("SHOW pg_trgm.word_similarity_threshold")) == 0.6  # SET LOCAL: not leaked
    result = await search(pool, SearchQuery("INV0ICE", since=since, limit=100))
    assert ids["invoice"] in [h["document_id"] for h in result["hits"]], result
    assert (await search(pool, SearchQuery("INV0ICE", since=since, limit=100)))["total"] == result["total"]
    unrelated = await search(pool, SearchQuery("ZQXJVWK", since=since))  # no trigram in common: no flood
    assert unrelated["total"] == 0


async def test_filters_and_pagination(corpus):
    pool, ids, tag, _ = corpus
    q = f"zephyrine {tag}"
    first, second = [await search(pool, SearchQuery(q, limit=2, offset=o)) for o in (0, 2)]
    pages = [(h["document_id"], h["page_index"]) for h in first["hits"] + second["hits"]]
    assert len(pages) == len(set(pages)) == first["total"] == second["total"]
    beyond = await search(pool, SearchQuery(q, limit=2, offset=100))  # past the last page: total still said
    assert (beyond["hits"], beyond["total"]) == ([], first["total"])
    assert (await search(pool, SearchQuery(q, status="failed")))["total"] == 0
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert (await search(pool, SearchQuery(q, since=future)))["total"] == 0
    assert (await search(pool, SearchQuery(q, until=future)))["total"] == first["total"]
    # the invoice has no template: its receipt fields (ocrstream/ocr/receipt_fields.py) are searchable
    found = await search(pool, SearchQuery(q, fields={"total": "125.40"}))
    assert [h["document_id"] for h in found["hits"]] == [ids["invoice"]]
    assert (await search(pool, SearchQuery(q, fields={"total": "125.41"})))["total"] == 0


async def test_receipt_fields_are_stored_and_found_by_field_alone(corpus, stack_settings):
    pool, ids, tag, _ = corpus
    row = await pool.fetchrow("SELECT fields FROM documents WHERE document_id = $1", ids["invoice"])
    total = json.loads(row["fields"])["total"]
    assert (total["text"], total["value"], total["source"], total["regions"]) == ("125.40", 125.4, "receipt", ["p0-r2"])
    for value in ("125.40", "125.4"):  # the printed text, or the amount as a number
        hit = await search(pool, SearchQuery("", fields={"total": value, "vendor_name": f"ZEPHYRINE {tag} TRADING"}))
        assert [(h["document_id"], [r["region_id"] for r in h["regions"]]) for h in hit["hits"]] \
            == [(ids["invoice"], ["p0-r0", "p0-r2"])]
    with pytest.raises(ValueError):
        SearchQuery("")  # neither words nor fields
    off = StoreStage(stack_settings.model_copy(update={"receipt_fields": False}))
    off.postprocessor, off.pool = PostProcessor(enabled_rules=["whitespace"]), pool
    out = await off.store_done(stored_event(f"search-off-{tag}", [["ACME TRADING", "CASH RECEIPT", "TOTAL 9.90"]]))
    assert out.event.fields == {}


async def test_template_field_filter(corpus, stack_settings):
    pool, _, tag, _ = corpus
    stage = StoreStage(stack_settings)
    stage.postprocessor, stage.pool = None, pool
    stage.postprocessor = PostProcessor(enabled_rules=["nfkc", "whitespace"])
    event = stored_dict(f"search-form-{tag}", [[f"LAB {tag} REPORT", "13.9"]], template="lab-report")
    event["regions"][1]["field"] = {"name": "haemoglobin", "type": "decimal", "unit": "g/dL"}
    await stage.store_done(events.from_json_object(events.RECOGNIZED, event))
    hit = await search(pool, SearchQuery(f"lab {tag}", fields={"haemoglobin": "13.9"}, template="lab-report"))
    assert [h["document_id"] for h in hit["hits"]] == [f"search-form-{tag}"]
    assert (await search(pool, SearchQuery(f"lab {tag}", fields={"haemoglobin": "99"})))["total"] == 0


async def test_templated_document_is_found_by_its_fields_words(corpus, stack_settings):
    """A template field's region holds only its value ("13.2"); its name and unit are searchable too."""
    pool, _, tag, since = corpus
    stage = StoreStage(stack_settings)
    stage.postprocessor, stage.pool = PostProcessor(enabled_rules=["nfkc", "whitespace"]), pool
    event = stored_dict(f"search-fieldwords-{tag}", [["13.2", "7.4"]], template="lab-report")
    event["regions"][0]["field"] = {"name": "haemoglobin", "type": "decimal", "unit": "g/dL"}
    event["regions"][1]["field"] = {"name": "white_cells", "type": "decimal", "unit": "x10^9/L"}
    await stage.store_done(events.from_json_object(events.RECOGNIZED, event))
    for q, region in (("haemoglobin", "p0-r0"), ("white cells", "p0-r1"), ("haemoglobn", "p0-r0")):
        hits = [h for h in (await search(pool, SearchQuery(q, template="lab-report", since=since)))["hits"]
                if h["document_id"] == f"search-fieldwords-{tag}"]
        assert [[r["region_id"] for r in h["regions"]] for h in hits] == [[region]], (q, hits)
        assert hits[0]["regions"][0]["text"] in ("13.2", "7.4")  # the region's text stays the value
    hit = (await search(pool, SearchQuery("haemoglobin", template="lab-report", since=since)))["hits"]
    snippets = {h["document_id"]: h["snippet"] for h in hit}
    assert "<mark>haemoglobin</mark> 13.2 g/dL" in snippets[f"search-fieldwords-{tag}"], snippets


def test_bad_queries_are_refused():
    for kwargs in ({"q": "  "}, {"q": "x" * 501}, {"q": "a", "limit": 0}, {"q": "a", "offset": -1}):
        with pytest.raises(ValueError):
            SearchQuery(**kwargs)


def test_cli_search_prints_ranked_hits(corpus, stack_env):
    import json
    import subprocess
    import sys

    _, ids, tag, _ = corpus
    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "search", f"zephyrine {tag}", "--json", "--limit", "2"],
                         env=stack_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["total"] == 3 and result["hits"][0]["document_id"] == ids["other"]
    text = subprocess.run([sys.executable, "-m", "ocrstream.cli", "search", f"zephyrine {tag}"],
                          env=stack_env, capture_output=True, text=True, timeout=120)
    assert "3 matching page(s)" in text.stdout and ids["memo"] in text.stdout and "box [" in text.stdout


async def test_snippets_escape_the_text_they_mark(corpus):
    pool, ids, tag, _ = corpus
    exact = (await search(pool, SearchQuery(f"quokka {tag}")))["hits"][0]  # ts_headline
    noisy = (await search(pool, SearchQuery(f"QU0KKA {tag}")))["hits"][0]  # trigram only
    assert exact["document_id"] == noisy["document_id"] == ids["markup"]
    assert noisy["snippet"] == f"<mark>QUOKKA</mark> <mark>{tag}</mark> R&amp;D 5&lt;6 &lt;b&gt;"
    for hit in (exact, noisy):
        text = hit["snippet"].replace("<mark>", "").replace("</mark>", "")
        assert "<mark>QUOKKA</mark>" in hit["snippet"] and "<" not in text and "R&D" not in text, hit["snippet"]

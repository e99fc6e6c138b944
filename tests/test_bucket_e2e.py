"""End to end on the embedded stack, the four stages as processes: a file dropped into the bucket
with the minio SDK (and no other call) is read, stored, found by search and exported as a
searchable PDF whose text layer matches the stored text, word by word, on the original pages.

SeaweedFS's filer publishes the put on ``ocr.bucket-notifications`` (configured by the dev stack),
and the ingest stage's bucket door turns it into a document.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from minio import Minio

from ocrstream.contracts import events
from ocrstream.ocr.evaluation import cer
from ocrstream.ops.launcher import StageProcesses, free_port
from ocrstream.streaming.results import wait_for_results
from services.ingest.bucket import ObjectEvent
from tests.test_pipeline_e2e import wait_http
from tools.render_samples import encode, render_page

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
LIMIT_BYTES = 2_000_000  # OCRSTREAM_MAX_DOCUMENT_BYTES of this pipeline


@pytest.fixture(scope="module")
def pipeline(stack_env, tmp_path_factory):
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": "0", "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_MAX_DOCUMENT_BYTES": str(LIMIT_BYTES),
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"bucket-{uuid.uuid4().hex[:6]}"}
    metrics = {"ingest": {"OCRSTREAM_METRICS_PORT": str(free_port())}}
    with StageProcesses(env, tmp_path_factory.mktemp("logs"), stage_env=metrics) as stages:
        yield stages, env


@pytest.fixture(scope="module")
def s3(stack) -> Minio:
    client = Minio(stack.s3_endpoint, access_key=stack.s3_access_key, secret_key=stack.s3_secret_key, secure=False)
    if not client.bucket_exists("ocrstream"):
        client.make_bucket("ocrstream")
    return client


def drop(s3: Minio, key: str, data: bytes) -> str:
    """Put ``data`` at ``key`` (the only call a user makes); the document id it will get."""
    s3.put_object("ocrstream", key, io.BytesIO(data), len(data))
    return ObjectEvent("created", "ocrstream", key, etag=s3.stat_object("ocrstream", key).etag).document_id


@pytest.fixture(scope="module")
def dropped(pipeline, s3, stack_settings):
    """Three drops into inbox/ (an image, a two-page PDF, one too large) and one outside it."""
    tag = uuid.uuid4().hex[:6].upper()
    lines = [f"BUCKET DOOR {tag}", "TOTAL RM 88.20", "Thank you for shopping"]
    jpeg = encode(render_page(lines, size=30), "JPEG", quality=90)
    pdf = (SAMPLES / "memo.pdf").read_bytes()
    big = np.random.default_rng(0).integers(0, 255, LIMIT_BYTES + 10, dtype=np.uint8).tobytes()
    ids = {"jpeg": drop(s3, f"inbox/{tag}/receipt.jpg", jpeg), "pdf": drop(s3, f"inbox/{tag}/memo.pdf", pdf),
           "big": drop(s3, f"inbox/{tag}/big.png", big)}
    outside = drop(s3, f"elsewhere/{tag}.jpg", jpeg)
    results = {doc_id: events.to_json_object(event) for doc_id, event in
               asyncio.run(wait_for_results(stack_settings, ids.values(), timeout_s=600)).items()}
    return {"tag": tag, "lines": lines, "jpeg": jpeg, "pdf": pdf, "ids": ids, "outside": outside,
            "results": results}


async def rows(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_a_dropped_file_is_read_once_and_an_overwrite_is_a_new_document(dropped, pipeline, s3, stack_settings):
    ids, results, tag = dropped["ids"], dropped["results"], dropped["tag"]
    image = results[ids["jpeg"]]
    assert image["status"] == "done" and image["document"]["source"] == "bucket"
    assert image["document"]["filename"] == f"s3://ocrstream/inbox/{tag}/receipt.jpg"
    assert cer([image["text"]], ["\n".join(dropped["lines"])], ci=True) < 0.05, image["text"]
    assert results[ids["pdf"]]["status"] == "done" and len(results[ids["pdf"]]["pages"]) == 2
    big = results[ids["big"]]
    assert (big["status"], big["error"]["stage"], big["error"]["type"]) == ("failed", "ingest", "DocumentTooLargeError")

    # the same bytes again: same object version, no new document; new bytes: a new document
    assert drop(s3, f"inbox/{tag}/receipt.jpg", dropped["jpeg"]) == ids["jpeg"]
    newer = drop(s3, f"inbox/{tag}/receipt.jpg", encode(render_page([f"OVERWRITTEN {tag}"], size=30), "PNG"))
    assert newer != ids["jpeg"]
    assert (await wait_for_results(stack_settings, [newer], timeout_s=300))[newer].status == "done"
    stored = await rows(stack_settings.dsn, "SELECT document_id FROM documents WHERE filename = $1",
                        f"s3://ocrstream/inbox/{tag}/receipt.jpg")
    assert sorted(r["document_id"] for r in stored) == sorted([ids["jpeg"], newer])
    assert not await rows(stack_settings.dsn, "SELECT 1 FROM documents WHERE document_id = $1",
                          dropped["outside"])
    s3.remove_object("ocrstream", f"inbox/{tag}/memo.pdf")  # a delete: ignored, counted

    stages, _ = pipeline
    url = f"http://127.0.0.1:{stages.stage_env['ingest']['OCRSTREAM_METRICS_PORT']}/metrics"
    counted = {}
    async with httpx.AsyncClient() as client:
        for _ in range(60):
            counted = {line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                       for line in (await client.get(url)).text.splitlines()
                       if line.startswith("ocrstream_bucket_events_total{")}
            if counted.get("ignored_delete"):
                break
            await asyncio.sleep(0.5)
    assert counted.get("ignored_delete", 0) >= 1 and counted.get("ignored_outside_prefix", 0) >= 1, counted
    assert counted.get("ingested", 0) >= 3 and counted.get("failed", 0) >= 1, counted


async def test_an_idle_pipeline_consumes_no_notifications(dropped, pipeline):
    """Notifications of the pipeline's own writes (crops, the delivery-attempt ledger) are ignored
    without writing anything, so they stop once the pipeline is idle. They used to feed back (each
    ignored notification's ledger write was notified in turn: ~4 messages/s forever, issue 13)."""
    stages, _ = pipeline
    url = f"http://127.0.0.1:{stages.stage_env['ingest']['OCRSTREAM_METRICS_PORT']}/metrics"
    name = 'ocrstream_messages_in_total{stage="ingest",topic="ocr.bucket-notifications"}'

    async def consumed(client: httpx.AsyncClient) -> float:
        lines = (await client.get(url)).text.splitlines()
        return next(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))

    async with httpx.AsyncClient() as client:
        counts = [await consumed(client)]
        for _ in range(20):  # until 5 s pass without a notification (at most ~100 s)
            await asyncio.sleep(5)
            counts.append(await consumed(client))
            if counts[-1] == counts[-2]:
                break
    assert counts[0] > 0 and counts[-1] == counts[-2], counts


async def test_search_finds_the_dropped_document(dropped, pipeline):
    _, env = pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    await wait_http(api + "/docs")
    async with httpx.AsyncClient(timeout=30) as client:
        found = (await client.get(api + "/v1/search", params={"q": f"bucket door {dropped['tag']}"})).json()
        refused = await client.get(api + "/v1/search", params={"q": "x", "limit": 0})
    hit = found["hits"][0]
    assert hit["document_id"] == dropped["ids"]["jpeg"] and hit["page_index"] == 0, found
    assert "<mark>" in hit["snippet"] and len(hit["regions"][0]["box"]) == 4
    assert refused.status_code == 422


def pdf_words_in_boxes(pdf: bytes, doc: dict) -> tuple[str, list[str]]:
    """(all text pypdfium2 extracts, the words NOT found inside their own box)."""
    document = pdfium.PdfDocument(pdf)
    texts, misplaced = [], []
    for page_info in doc["pages"]:
        page = document[page_info["page_index"]]
        textpage = page.get_textpage()
        texts.append(textpage.get_text_range())
        w_pt, h_pt = page.get_size()
        sx, sy = w_pt / page_info["width"], h_pt / page_info["height"]
        for region in doc["regions"]:
            if region["page_index"] != page_info["page_index"]:
                continue
            for word in region["words"] or [{"text": region["text"], "box": region["box"]}]:
                x0, y0, x1, y1 = word["box"]
                inside = textpage.get_text_bounded(x0 * sx, h_pt - y1 * sy, x1 * sx, h_pt - y0 * sy)
                if word["text"] not in inside:
                    misplaced.append(f"{word['text']!r} not in {inside!r}")
    return " ".join(texts), misplaced


def render(pdf: bytes, index: int) -> np.ndarray:
    return np.asarray(pdfium.PdfDocument(pdf)[index].render(scale=1).to_pil().convert("L"))


@pytest.mark.parametrize("kind", ["jpeg", "pdf"])
async def test_searchable_pdf_has_the_stored_text_at_the_word_boxes_on_the_original_pages(dropped, pipeline, kind):
    _, env = pipeline
    doc_id = dropped["ids"][kind]
    api = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    await wait_http(api + "/docs")
    async with httpx.AsyncClient(timeout=120) as client:
        doc = (await client.get(f"{api}/v1/documents/{doc_id}")).json()
        resp = await client.get(f"{api}/v1/documents/{doc_id}/export", params={"format": "pdf"})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf"
    pdf = resp.content

    text, misplaced = pdf_words_in_boxes(pdf, doc)
    stored = " ".join(r["text"] for r in doc["regions"])
    error = cer([" ".join(text.split())], [" ".join(stored.split())])
    n_words = sum(len(r["words"]) or 1 for r in doc["regions"])
    print(f"\nsearchable PDF of the {kind}: CER {error:.4f} against the stored text; "
          f"{n_words - len(misplaced)}/{n_words} words extracted inside their boxes")
    assert error < 0.01, (text, stored)
    assert not misplaced, misplaced

    with pikepdf.open(io.BytesIO(pdf)) as out:
        assert len(out.pages) == len(doc["pages"])
        if kind == "jpeg":  # the JPEG is embedded byte for byte (DCTDecode, no re-encoding)
            (image,) = out.pages[0].get_images().values()
            assert image.Filter == pikepdf.Name.DCTDecode and image.read_raw_bytes() == dropped["jpeg"]
    for i in range(len(doc["pages"])):  # the text layer is invisible: pages look exactly as before
        original = render(dropped[kind], i) if kind == "pdf" else None
        if original is not None:
            assert np.array_equal(render(pdf, i), original)


def test_cli_export_writes_the_searchable_pdf(dropped, pipeline, tmp_path):
    import subprocess
    import sys

    _, env = pipeline
    out = tmp_path / "receipt.pdf"
    run = subprocess.run([sys.executable, "-m", "ocrstream.cli", "export", dropped["ids"]["jpeg"], "-o", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = pdfium.PdfDocument(out.read_bytes())[0].get_textpage().get_text_range()
    assert " ".join(text.split()) == " ".join(dropped["results"][dropped["ids"]["jpeg"]]["text"].split())

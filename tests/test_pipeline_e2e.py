"""End to end: the four stages as separate processes on the real embedded broker, S3 and
PostgreSQL; documents with known text (rendered here) plus bad inputs in, rows, results events
and dead letters checked.

CER bound: the documents are clean renderings (24-30 px font), on which the shipped PP-OCRv6
recogniser reads lines at about 1% CER; 5% leaves room for a line split differently by the
detector, while a broken stage (wrong crops, lost regions, wrong reading order) costs far more.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image

from ocrstream.client.client import submit_all
from ocrstream.contracts import events
from ocrstream.ocr.evaluation import cer
from ocrstream.ops.launcher import STAGES
from ocrstream.streaming.results import wait_for_results
from services.ingest.stage import raw_key_document_id
from tools.render_samples import encode, render_page

pytestmark = pytest.mark.slow

DOCS = {
    "invoice.png": ["INVOICE NO 20931", "DATE 02/11/2026", "TOTAL RM 125.40"],
    "note.jpg": ["Meeting moved to Friday", "Room 4B at 10:30"],
    "skewed.png": ["Parcel 4471-2209 shipped", "Arrives within 3 days"],
}


def render(name: str, lines: list[str]) -> bytes:
    if name.endswith(".jpg"):
        return encode(render_page(lines, size=30), "JPEG", quality=90)
    return encode(render_page(lines, size=28, rotate_deg=2.0 if "skewed" in name else 0.0))


def bad_inputs() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, stage expected to reject, error type expected): documents that pass the
    door (their type is supported) and fail in preprocess."""
    jpeg = render("x.jpg", ["truncated page"])
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # 400 Mpx, ~50 KB compressed
    return {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "preprocess", "TruncatedImageError"),
        "bomb.png": (bomb.getvalue(), "preprocess", "DocumentTooLargeError"),
    }


#: Refused at the CLI/HTTP door (the caller is told; no document, no dead letter).
REFUSED = {"notes.txt": (b"this is not an image\n", "NotAnImageError", 415),
           "empty.png": (b"", "EmptyDocumentError", 400)}


async def read_topic(settings, topic: str, idle_s: float = 3.0) -> list:
    """Every record of ``topic`` from the beginning (a fresh consumer group)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=f"reader-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                enable_auto_commit=False, session_timeout_ms=6000,
                                heartbeat_interval_ms=1000)
    await consumer.start()
    records = []
    try:
        while polled := await consumer.getmany(timeout_ms=int(idle_s * 1000)):
            records += [r for batch in polled.values() for r in batch]
    finally:
        await consumer.stop()
    return records


async def submit_raw(settings, data: bytes, key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(events.RAW, data, key=key.encode(), headers=[("filename", b"raw.png")])
    finally:
        await producer.stop()


async def wait_http(url: str, timeout_s: float = 60) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(int(timeout_s * 10)):
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(url)


async def test_documents_flow_through_all_stages(pipeline, stack_settings, tmp_path):
    stages, env = pipeline
    paths = []
    for name, lines in DOCS.items():
        (tmp_path / name).write_bytes(render(name, lines))
        paths.append(tmp_path / name)
    bad = bad_inputs()
    for name, (data, _, _) in bad.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    for name, (data, _, _) in REFUSED.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    receipts = await submit_all(stack_settings, paths)
    by_name = {r.filename: r for r in receipts}
    for name, (_, error_type, _) in REFUSED.items():  # refused at the door, reported to the caller
        assert type(by_name[name].error).__name__ == error_type

    # The two other doors: the raw topic and the HTTP API.
    raw_png = render("raw.png", ["RAW TOPIC DOOR 77"])
    raw_key = f"producer-{uuid.uuid4().hex[:8]}"
    await submit_raw(stack_settings, raw_png, raw_key)
    raw_id = raw_key_document_id(raw_key, hashlib.sha256(raw_png).hexdigest())
    raw_text_key = f"producer-{uuid.uuid4().hex[:8]}"  # the raw topic has no caller: dead letter
    await submit_raw(stack_settings, REFUSED["notes.txt"][0], raw_text_key)
    raw_text_id = raw_key_document_id(raw_text_key, hashlib.sha256(REFUSED["notes.txt"][0]).hexdigest())
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz")
    async with httpx.AsyncClient() as client:
        resp = await client.post(api + "/v1/documents",
                                 files={"file": ("api.png", render("api.png", ["HTTP DOOR 4242"]))})
        assert resp.status_code == 202, resp.text
        http_id = resp.json()["document_id"]
        for name, (data, error_type, status) in REFUSED.items():
            refused = await client.post(api + "/v1/documents", files={"file": (name, data)})
            assert refused.status_code == status and refused.json()["detail"]["error"] == error_type

    accepted = [r for r in receipts if r.error is None]
    ids = [r.document_id for r in accepted] + [raw_id, http_id, raw_text_id]
    results = await wait_for_results(stack_settings, ids, timeout_s=600)

    # Good documents: done, text close to what was rendered.
    expected = {by_name[n].document_id: "\n".join(lines) for n, lines in DOCS.items()}
    expected[raw_id], expected[http_id] = "RAW TOPIC DOOR 77", "HTTP DOOR 4242"
    for doc_id in expected:
        assert results[doc_id].status == "done", results[doc_id]
    hyps = [results[d].text for d in expected]
    assert cer(hyps, list(expected.values()), ci=True) < 0.05, hyps

    # Bad inputs: failed with the typed error of the stage that rejected them.
    for name, (_, stage, error_type) in bad.items():
        result = results[by_name[name].document_id]
        assert result.status == "failed" and result.error is not None
        assert (result.error.stage, result.error.type) == (stage, error_type), result
    assert (results[raw_text_id].status, results[raw_text_id].error.type) == ("failed", "NotAnImageError")
    assert results[raw_id].document.external_id == raw_key

    # PostgreSQL holds the same outcome.
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        rows = {r["document_id"]: r for r in await conn.fetch(
            "SELECT d.document_id, d.status, d.error_type, d.text, d.content_sha256,"
            " (SELECT count(*) FROM regions r WHERE r.document_id = d.document_id) AS n"
            " FROM documents d WHERE d.document_id = ANY($1::text[])", ids)}
    finally:
        await conn.close()
    for doc_id in expected:
        assert rows[doc_id]["status"] == "done" and rows[doc_id]["n"] == len(results[doc_id].regions) > 0
        assert rows[doc_id]["text"] == results[doc_id].text
    for name, (_, _, error_type) in bad.items():
        assert (rows[by_name[name].document_id]["status"], rows[by_name[name].document_id]["error_type"]) == (
            "failed", error_type)

    # Every event on every topic matches its schema; dead letters name stage and error.
    for topic in (events.INGESTED, events.REGIONS, events.RECOGNIZED, events.RESULTS, events.DLQ):
        for record in await read_topic(stack_settings, topic):
            event = events.decode(topic, record.value)  # raises if not schema-valid
            assert record.key.decode() == event.document_id
    dead = {letter.document_id: letter for letter in (events.decode(events.DLQ, r.value)
                                                      for r in await read_topic(stack_settings, events.DLQ))}
    for name, (_, stage, error_type) in bad.items():
        letter = dead[by_name[name].document_id]
        assert (letter.stage, letter.error.type) == (stage, error_type)

    # The query API serves the same documents, and their exports.
    query = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    await wait_http(query + "/docs")
    async with httpx.AsyncClient() as client:
        doc = (await client.get(f"{query}/v1/documents/{http_id}")).json()
        assert doc["status"] == "done" and doc["text"] == results[http_id].text
        assert len(doc["regions"]) == len(results[http_id].regions)
        failed = (await client.get(query + "/v1/documents", params={"status": "failed"})).json()
        assert {by_name[n].document_id for n in bad} <= {d["document_id"] for d in failed}
        txt = await client.get(f"{query}/v1/documents/{http_id}/export", params={"format": "txt"})
        assert txt.text == results[http_id].text
        hocr = await client.get(f"{query}/v1/documents/{http_id}/export", params={"format": "hocr"})
        assert "ocrx_word" in hocr.text and hocr.headers["content-type"].startswith("application/xhtml+xml")
        assert (await client.get(f"{query}/v1/documents/nope")).status_code == 404

    # Every stage exports its own Prometheus metrics.
    async with httpx.AsyncClient() as client:
        for stage in STAGES:
            port = stages.stage_env[stage]["OCRSTREAM_METRICS_PORT"]
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            consumed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith(f'ocrstream_messages_in_total{{stage="{stage}"'))
            assert consumed >= (1 if stage == "ingest" else len(expected)), (stage, text[:500])
            assert f'ocrstream_processing_seconds_count{{stage="{stage}"}}' in text
        recognize = (await client.get(
            f"http://127.0.0.1:{stages.stage_env['recognize']['OCRSTREAM_METRICS_PORT']}/metrics")).text
        assert 'key="provider",stage="recognize",value="CPUExecutionProvider"' in recognize
        failed = (await client.get(
            f"http://127.0.0.1:{stages.stage_env['preprocess']['OCRSTREAM_METRICS_PORT']}/metrics")).text
        # >= 1: a new consumer group reads the input topic from its beginning, so documents of earlier
        # test modules on the shared stack are counted too
        assert 'key="detector_backend",stage="preprocess",value="onnxruntime"' in failed  # the suite pins it
        truncated = re.search(r'^ocrstream_messages_failed_total\{error_type="TruncatedImageError",stage="preprocess"\} '
                              r'([0-9.e+]+)$', failed, re.MULTILINE)
        assert truncated and float(truncated.group(1)) >= 1, failed[-2000:]
    assert not stages.dead(), {s: stages.log_tail(s) for s in stages.dead()}


async def test_fixed_layout_template_cuts_named_fields(pipeline, stack_settings, tmp_path):
    """The sample form with its shipped template: regions carry field names and read the values."""
    from tools.render_samples import LAB_FIELDS, LAB_TITLE, render_form

    form = tmp_path / "lab.png"
    form.write_bytes(encode(render_form(LAB_TITLE, LAB_FIELDS)))
    good, = await submit_all(stack_settings, [form], template="lab-report")
    bad, = await submit_all(stack_settings, [form], template="no-such-form")
    results = await wait_for_results(stack_settings, [good.document_id, bad.document_id], timeout_s=300)

    done = events.to_json_object(results[good.document_id])
    assert done["status"] == "done" and done["document"]["template"] == "lab-report"
    fields = {r["field"]["name"]: r["text"] for r in done["regions"]}
    expected = dict(zip(["patient_id", "sample_date", "sample_time", "haemoglobin", "white_cells",
                         "platelets", "glucose"], (v for _, v in LAB_FIELDS)))
    assert fields.keys() == expected.keys()
    assert cer(list(fields.values()), list(expected.values()), ci=True) < 0.05, fields
    assert {r["field"]["type"] for r in done["regions"]} == {"code", "date", "time", "decimal", "integer"}
    # validated, typed values from the store's post-processing
    assert done["fields"]["haemoglobin"] == {"value": 13.9, "text": done["fields"]["haemoglobin"]["text"], "valid": True}
    assert (done["fields"]["sample_date"]["value"], done["fields"]["platelets"]["value"]) == ("2026-11-20", 251)
    assert done["fields"]["patient_id"]["valid"] is True

    failed = results[bad.document_id]
    assert failed.status == "failed" and failed.error is not None
    assert (failed.error.stage, failed.error.type) == ("preprocess", "UnknownTemplateError")
    assert "lab-report" in failed.error.message  # lists the known templates


async def test_a_mixed_pdf_is_read_page_by_page_through_the_stages(pipeline, stack_settings, tmp_path):
    """A born-digital page read from the PDF's text layer, a scanned page OCRed: decided per page,
    recorded in the results event and PostgreSQL (issue 20)."""
    from tests.test_pdf_text import INVOICE, born_digital, merge, scanned

    path = tmp_path / "mixed.pdf"
    path.write_bytes(merge(born_digital([INVOICE]), scanned((Path(__file__).parents[1] / "samples" /
                                                             "receipt.png").read_bytes())))
    receipt, = await submit_all(stack_settings, [path])
    results = await wait_for_results(stack_settings, [receipt.document_id], timeout_s=300)
    done = events.to_json_object(results[receipt.document_id])
    assert done["status"] == "done", done.get("error")
    assert [p["text_source"] for p in done["pages"]] == ["pdf-text", "ocr"]
    first = [r for r in done["regions"] if r["page_index"] == 0]
    assert {r["source"] for r in first} == {"pdf-text"} and {r["confidence"] for r in first} == {1.0}
    assert done["text"].split("\f")[0] == "\n".join(INVOICE)
    assert "CORNER" in done["text"].split("\f")[1]
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        rows = await conn.fetch("SELECT page_index, text_source FROM pages WHERE document_id = $1 ORDER BY page_index",
                                receipt.document_id)
    finally:
        await conn.close()
    assert [r["text_source"] for r in rows] == ["pdf-text", "ocr"]
    stages, _ = pipeline
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(
            f"http://127.0.0.1:{stages.stage_env['preprocess']['OCRSTREAM_METRICS_PORT']}/metrics")).text
    counted = dict(re.findall(r'^ocrstream_pages_total\{path="([a-z-]+)"\} ([0-9.]+)$', scraped, re.M))
    assert float(counted["pdf-text"]) >= 1 and float(counted["ocr"]) >= 1, counted


async def test_a_page_with_ink_and_no_text_needs_review(pipeline, stack_settings, tmp_path):
    """Issue 24: a page with ink but no text (bars) is done with ``needs_review`` true and its
    ink fraction in the results; a blank page is done and not flagged."""
    import cv2

    from tests.unit.test_silent_failures import barcode

    (tmp_path / "bars.png").write_bytes(cv2.imencode(".png", barcode())[1].tobytes())
    (tmp_path / "blank.png").write_bytes(encode(Image.new("RGB", (1000, 1400), "white"), "PNG"))
    bars, blank = await submit_all(stack_settings, [tmp_path / "bars.png", tmp_path / "blank.png"])
    results = await wait_for_results(stack_settings, [bars.document_id, blank.document_id], timeout_s=300)
    bars_done, blank_done = (events.to_json_object(results[r.document_id]) for r in (bars, blank))
    assert bars_done["status"] == blank_done["status"] == "done"
    assert bars_done["text"].strip() == "" and bars_done["needs_review"] is True
    assert bars_done["pages"][0]["ink"] > 100 * stack_settings.review_ink_fraction
    assert blank_done["needs_review"] is False and blank_done["pages"][0]["ink"] == 0
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        assert await conn.fetchval("SELECT needs_review FROM documents WHERE document_id = $1", bars.document_id)
    finally:
        await conn.close()


async def test_resubmitted_bytes_are_reused_or_reprocessed(pipeline, stack_settings, tmp_path):
    path = tmp_path / "again.png"
    path.write_bytes(render("again.png", [f"RESUBMIT {uuid.uuid4().hex[:6].upper()}"]))
    first, = await submit_all(stack_settings, [path])
    await wait_for_results(stack_settings, [first.document_id], timeout_s=300)

    reuse = stack_settings.model_copy(update={"duplicates": "reuse"})
    again, = await submit_all(reuse, [path])
    assert again.reused and again.document_id == first.document_id
    other, = await submit_all(reuse, [path], template="lab-report")  # another template: not a duplicate
    assert not other.reused and other.document_id != first.document_id
    fresh, = await submit_all(stack_settings, [path])  # default policy: reprocess
    assert not fresh.reused and fresh.document_id != first.document_id


async def test_no_document_is_lost_when_stages_crash(pipeline, stack_settings, tmp_path):
    """SIGKILL the sink while work piles up for it, and recognize mid-work: after restarts every
    document still gets exactly its result (at-least-once; offsets only committed after outputs)."""
    import signal

    stages, _ = pipeline
    stages.stop_one("store", sig=signal.SIGKILL)
    paths = []
    for i in range(3):
        (tmp_path / f"crash{i}.png").write_bytes(render("c.png", [f"CRASH TEST {i} {uuid.uuid4().hex[:4].upper()}"]))
        paths.append(tmp_path / f"crash{i}.png")
    receipts = await submit_all(stack_settings, paths)
    ids = {r.document_id for r in receipts}
    for _ in range(600):  # the recognize stage keeps producing while the store is down
        recognized = {events.decode(events.RECOGNIZED, r.value).document_id
                      for r in await read_topic(stack_settings, events.RECOGNIZED, idle_s=1)}
        if ids <= recognized:
            break
    assert ids <= recognized

    more = [tmp_path / "crash-late.png"]
    more[0].write_bytes(render("c.png", ["LATE DOCUMENT 99"]))
    late = await submit_all(stack_settings, more)
    stages.stop_one("recognize", sig=signal.SIGKILL)  # maybe mid-batch: nothing committed yet
    stages.start_one("recognize")
    stages.start_one("store")
    all_ids = ids | {late[0].document_id}
    results = await wait_for_results(stack_settings, all_ids, timeout_s=300)
    assert all(results[d].status == "done" for d in all_ids)
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM documents WHERE document_id = ANY($1::text[])"
                                     " AND status = 'done'", list(all_ids))
    finally:
        await conn.close()
    assert stored == len(all_ids)
    assert not stages.dead()


@pytest.mark.parametrize("via, door", [("auto", "http"), ("kafka", "cli")])
def test_cli_submit_wait_prints_results_and_fails_on_a_failed_document(pipeline, stack_settings, tmp_path, via, door):
    """``submit --wait``: each document's text or its failure (stage, error type); exit 1 if any failed.
    ``--via auto`` goes through the ingest stage's HTTP door (it answers), ``--via kafka`` through
    the CLI door; the documents table records which (``source``)."""
    import subprocess
    import sys

    _, env = pipeline
    good, bad, empty = tmp_path / "cli.png", tmp_path / "cli-truncated.jpg", tmp_path / "cli-empty.png"
    good.write_bytes(render("cli.png", [f"SUBMITTED FROM THE CLI 31 {via.upper()}"]))
    jpeg = render("x.jpg", [f"truncated page {via}"])
    bad.write_bytes(jpeg[: len(jpeg) // 2])
    empty.write_bytes(b"")
    cli = [sys.executable, "-m", "ocrstream.cli", "submit", "--wait", "--timeout", "300", "--via", via]
    asyncio.run(wait_http(f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}/healthz"))  # else auto takes Kafka
    out = subprocess.run(cli + [str(good)], env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    assert "[done]" in out.stdout, out.stdout
    assert cer([out.stdout.split("\n")[-2]], [f"SUBMITTED FROM THE CLI 31 {via.upper()}"]) < 0.1, out.stdout
    document_id = out.stdout.split()[0]

    async def source() -> str:
        conn = await asyncpg.connect(stack_settings.dsn)
        try:
            return await conn.fetchval("SELECT source FROM documents WHERE document_id = $1", document_id)
        finally:
            await conn.close()

    assert asyncio.run(source()) == door

    out = subprocess.run(cli + [str(good), str(bad), str(empty)], env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "[done]" in out.stdout and "[failed]" in out.stdout
    assert "failed in preprocess: TruncatedImageError" in out.stdout
    assert "cli-empty.png  rejected at ingest: EmptyDocumentError" in out.stdout
    assert ("2 of 3 document(s) failed: cli-truncated.jpg (preprocess: TruncatedImageError); "
            "cli-empty.png (ingest: EmptyDocumentError)") in out.stderr


async def test_http_post_with_wait_answers_with_the_result(pipeline):
    _, env = pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz")
    async with httpx.AsyncClient(timeout=120) as client:
        resp = await client.post(api + "/v1/documents", params={"wait": 60},
                                 files={"file": ("wait.png", render("wait.png", ["WAITED OVER HTTP 808"]))})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "done" and body["result"]["document_id"] == body["document_id"]
        assert cer([body["result"]["text"]], ["WAITED OVER HTTP 808"]) < 0.1, body["result"]["text"]
        cut = bad_inputs()["truncated.jpg"][0]
        bad = await client.post(api + "/v1/documents", params={"wait": 60}, files={"file": ("bad.jpg", cut)})
        assert bad.status_code == 200 and bad.json()["status"] == "failed"
        assert bad.json()["result"]["error"]["type"] == "TruncatedImageError"
        quick = await client.post(api + "/v1/documents", files={"file": ("q.png", render("q.png", ["NO WAIT"]))})
        assert quick.status_code == 202 and quick.json()["status"] == "accepted"


def status_json(env) -> tuple[int, dict]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, json.loads(out.stdout)


async def documents_last_hour(settings) -> tuple[dict, str | None]:
    """``{status: count}`` of the last hour and the newest failed document's id, from PostgreSQL."""
    conn = await asyncpg.connect(settings.dsn)
    try:
        counts = dict(await conn.fetch("SELECT status, count(*) FROM documents"
                                       " WHERE stored_at > now() - interval '1 hour' GROUP BY status"))
        newest = await conn.fetchval("SELECT document_id FROM documents WHERE status = 'failed'"
                                     " ORDER BY stored_at DESC LIMIT 1")
    finally:
        await conn.close()
    return counts, newest


def status_when_healthy(env: dict[str, str]) -> tuple[int, dict]:
    """``status --json`` once it exits 0 (earlier tests restarted stages: wait, at most 120 s, until
    all are back in their groups); the last answer otherwise."""
    import time

    for _ in range(60):
        code, report = status_json(env)
        if code == 0:
            break
        time.sleep(2)
    return code, report


def test_status_is_healthy_then_names_a_stopped_stage(pipeline, stack_settings):
    """``status --json``: every endpoint and stage up (the stages' own PIDs found, lag 0 when idle);
    with the ingest stage stopped: exit 1, the stage not running, its HTTP API down, what to do."""

    stages, env = pipeline
    code, report = status_when_healthy(env)
    assert code == 0 and report["healthy"], report["problems"]
    assert all(e["ok"] for e in report["endpoints"]), report["endpoints"]
    by_stage = {s["name"]: s for s in report["stages"]}
    for name in STAGES:
        assert by_stage[name]["ready"] and by_stage[name]["members"] >= 1
        assert stages.procs[name].pid in [p["pid"] for p in by_stage[name]["processes"]]
    runs_on = {name: {p["runs_on"] for p in by_stage[name]["processes"]} for name in ("preprocess", "recognize")}
    assert runs_on == {"preprocess": {"onnxruntime"}, "recognize": {"CPUExecutionProvider"}}, runs_on  # pinned
    # Documents of earlier tests may still be finishing: the report's counts lie between two counts
    # taken just before and just after it.
    before, _ = asyncio.run(documents_last_hour(stack_settings))
    code, report = status_json(env)
    counts, newest_failure = asyncio.run(documents_last_hour(stack_settings))
    assert code == 0, report["problems"]
    for k in ("done", "failed"):
        assert before.get(k, 0) <= report["documents"][k] <= counts.get(k, 0), (k, before, report["documents"], counts)
    assert report["documents"]["pages_ocr"] >= 1 and report["documents"]["pages_pdf_text"] >= 0
    assert [f["document_id"] for f in report["failures"]][:1] == ([newest_failure] if newest_failure else [])

    stages.stop_one("ingest")
    try:
        code, report = status_json(env)
        assert code == 1 and not report["healthy"]
        ingest = next(s for s in report["stages"] if s["name"] == "ingest")
        assert not ingest["ready"] and ingest["processes"] == []
        assert next(e for e in report["endpoints"] if e["name"] == "ingest API")["ok"] is False
        assert any("ocrstream run ingest" in p["do"] for p in report["problems"]), report["problems"]
        assert all(s["ready"] for s in report["stages"] if s["name"] != "ingest")
    finally:
        stages.start_one("ingest")

def test_status_sees_a_frozen_stage_within_15_s(pipeline):
    """``kill -STOP`` of recognize: its process exists and its group stays Stable, but its own
    ``/readyz`` does not answer. ``status`` says it is frozen and what to do, exit 1, within 15 s
    (the subprocess's timeout); after ``kill -CONT`` it is healthy again."""
    import signal
    import subprocess
    import time

    stages, env = pipeline
    code, report = status_when_healthy(env)
    assert code == 0, report["problems"]
    recognize = stages.procs["recognize"].pid
    os.kill(recognize, signal.SIGSTOP)
    try:
        out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "status", "--json"], env=env,
                             capture_output=True, text=True, timeout=15)
        report = json.loads(out.stdout)
        assert out.returncode == 1 and not report["healthy"]
        stage = next(s for s in report["stages"] if s["name"] == "recognize")
        assert not stage["ready"] and stage["group_state"] == "Stable"
        process = next(p for p in stage["processes"] if p["pid"] == recognize)
        assert process["readiness"] == "frozen", process
        problem = next(p for p in report["problems"] if "recognize" in p["what"])
        assert "frozen" in problem["what"] and f"kill -CONT {recognize}" in problem["do"]
        assert all(s["ready"] for s in report["stages"] if s["name"] != "recognize")
    finally:
        os.kill(recognize, signal.SIGCONT)
    for _ in range(60):
        code, report = status_json(env)
        if code == 0:
            break
        time.sleep(2)
    assert code == 0, report["problems"]


async def test_dead_letters_are_replayed_after_a_fix(pipeline, stack_settings, tmp_path):
    """A form names a template preprocess does not know: failed. The fix (the template is
    installed, preprocess restarted), then `ocrstream dlq replay`: the document is done, once;
    a second replay skips it; the replay is recorded on the row and failures are listed by reason."""
    from ocrstream.ops import dlq
    from tools.render_samples import LAB_FIELDS, LAB_TITLE, render_form

    stages, env = pipeline
    name = f"ward-{uuid.uuid4().hex[:6]}"
    form = tmp_path / "ward.png"
    form.write_bytes(encode(render_form(LAB_TITLE, LAB_FIELDS)))
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(bad_inputs()["truncated.jpg"][0])
    receipt, = await submit_all(stack_settings, [form], template=name)
    cut, = await submit_all(stack_settings, [truncated])
    outcome = await wait_for_results(stack_settings, [receipt.document_id, cut.document_id], timeout_s=300)
    failed = outcome[receipt.document_id]
    assert (failed.status, failed.error and failed.error.type) == ("failed", "UnknownTemplateError")

    templates = tmp_path / "templates"
    templates.mkdir()
    shipped = (Path(__file__).parents[1] / "ocrstream/ocr/templates/lab-report.yaml").read_text()
    (templates / f"{name}.yaml").write_text(shipped.replace("name: lab-report", f"name: {name}"))
    stages.stop_one("preprocess")
    stages.stage_env["preprocess"]["OCRSTREAM_TEMPLATES_DIR"] = str(templates)
    stages.start_one("preprocess")

    letters = await dlq.dead_letters(stack_settings, error_type="UnknownTemplateError", document_id=receipt.document_id)
    assert len(letters) == 1 and letters[0].event.stage == "preprocess"
    assert [o.action for o in await dlq.replay(stack_settings, letters, dry_run=True)] == ["would-replay"]
    assert [o.action for o in await dlq.replay(stack_settings, letters)] == ["replayed"]
    deadline = asyncio.get_running_loop().time() + 300
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        while (row := await conn.fetchrow("SELECT status, replays, replayed_at FROM documents WHERE document_id = $1",
                                          receipt.document_id))["status"] != "done":
            assert asyncio.get_running_loop().time() < deadline, row
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    assert row["replays"] == 1 and row["replayed_at"] is not None
    assert [o.action for o in await dlq.replay(stack_settings, letters)] == ["skipped-done"]
    results = [events.decode(events.RESULTS, r.value) for r in await read_topic(stack_settings, events.RESULTS)]
    mine = [(e.status, e.timestamps.recognized or e.timestamps.failed)
            for e in results if e.document_id == receipt.document_id]
    assert sorted(s for s, _ in mine) == ["done", "failed"]  # one results event per version
    query = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    async with httpx.AsyncClient() as client:
        reasons = {(r["stage"], r["error_type"]): r for r in (await client.get(query + "/v1/failures")).json()}
        assert reasons[("preprocess", "TruncatedImageError")]["documents"] >= 1
        by_type = (await client.get(query + "/v1/documents",
                                    params={"status": "failed", "error_type": "TruncatedImageError"})).json()
        assert cut.document_id in {d["document_id"] for d in by_type}
        assert all(d["error_type"] == "TruncatedImageError" for d in by_type)

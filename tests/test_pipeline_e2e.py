"""End to end: the four stages as separate processes on the real embedded broker, S3 and
PostgreSQL; documents with known text (rendered here) plus bad inputs in, rows, results events
and dead letters checked.

CER bound: the documents are clean renderings (24-30 px font), on which the shipped PP-OCRv6
recogniser reads lines at about 1% CER; 5% leaves room for a line split differently by the
detector, while a broken stage (wrong crops, lost regions, wrong reading order) costs far more.
"""

from __future__ import annotations

import asyncio
import io
import uuid

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image

from services.core import events
from services.demo import submit_all
from services.evaluation import cer
from services.launcher import STAGES
from services.results import wait_for_results
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
    """name -> (bytes, stage expected to reject, error type expected)."""
    jpeg = render("x.jpg", ["truncated page"])
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")  # 400 Mpx, ~50 KB compressed
    return {
        "notes.txt": (b"this is not an image\n", "preprocess", "NotAnImageError"),
        "empty.png": (b"", "ingest", "EmptyDocumentError"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "preprocess", "TruncatedImageError"),
        "bomb.png": (bomb.getvalue(), "preprocess", "DocumentTooLargeError"),
    }


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
    receipts = await submit_all(stack_settings, paths)
    by_name = {r.filename: r for r in receipts}
    assert isinstance(by_name["empty.png"].error, Exception)  # rejected at ingest, reported to caller

    # The two other doors: the raw topic and the HTTP API.
    raw_id = f"raw-{uuid.uuid4().hex[:8]}"
    await submit_raw(stack_settings, render("raw.png", ["RAW TOPIC DOOR 77"]), raw_id)
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz")
    async with httpx.AsyncClient() as client:
        resp = await client.post(api + "/v1/documents",
                                 files={"file": ("api.png", render("api.png", ["HTTP DOOR 4242"]))})
        assert resp.status_code == 202, resp.text
        http_id = resp.json()["document_id"]
        empty = await client.post(api + "/v1/documents", files={"file": ("e.png", b"")})
        assert empty.status_code == 422 and empty.json()["detail"]["error"] == "EmptyDocumentError"

    ids = [r.document_id for r in receipts] + [raw_id, http_id, empty.json()["detail"]["document_id"]]
    results = await wait_for_results(stack_settings, ids, timeout_s=600)

    # Good documents: done, text close to what was rendered.
    expected = {by_name[n].document_id: "\n".join(lines) for n, lines in DOCS.items()}
    expected[raw_id], expected[http_id] = "RAW TOPIC DOOR 77", "HTTP DOOR 4242"
    for doc_id in expected:
        assert results[doc_id]["status"] == "done", results[doc_id]
    hyps = [results[d]["text"] for d in expected]
    assert cer(hyps, list(expected.values()), ci=True) < 0.05, hyps

    # Bad inputs: failed with the typed error of the stage that rejected them.
    for name, (_, stage, error_type) in bad.items():
        result = results[by_name[name].document_id]
        assert result["status"] == "failed"
        assert (result["error"]["stage"], result["error"]["type"]) == (stage, error_type), result

    # PostgreSQL holds the same outcome.
    conn = await asyncpg.connect(stack_settings.postgres_dsn)
    try:
        rows = {r["document_id"]: r for r in await conn.fetch(
            "SELECT d.document_id, d.status, d.error_type, d.text, d.content_sha256,"
            " (SELECT count(*) FROM regions r WHERE r.document_id = d.document_id) AS n"
            " FROM documents d WHERE d.document_id = ANY($1::text[])", ids)}
    finally:
        await conn.close()
    for doc_id in expected:
        assert rows[doc_id]["status"] == "done" and rows[doc_id]["n"] == len(results[doc_id]["regions"]) > 0
        assert rows[doc_id]["text"] == results[doc_id]["text"]
    for name, (_, _, error_type) in bad.items():
        assert (rows[by_name[name].document_id]["status"], rows[by_name[name].document_id]["error_type"]) == (
            "failed", error_type)

    # Every event on every topic matches its schema; dead letters name stage and error.
    for topic in (events.INGESTED, events.REGIONS, events.RECOGNIZED, events.RESULTS, events.DLQ):
        for record in await read_topic(stack_settings, topic):
            event = events.decode(topic, record.value)  # raises if not schema-valid
            assert record.key.decode() == event["document_id"]
    dead = {events.decode(events.DLQ, r.value)["document_id"]: events.decode(events.DLQ, r.value)
            for r in await read_topic(stack_settings, events.DLQ)}
    for name, (_, stage, error_type) in bad.items():
        letter = dead[by_name[name].document_id]
        assert (letter["stage"], letter["error"]["type"]) == (stage, error_type)

    # The query API serves the same documents, and their exports.
    query = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    await wait_http(query + "/docs")
    async with httpx.AsyncClient() as client:
        doc = (await client.get(f"{query}/v1/documents/{http_id}")).json()
        assert doc["status"] == "done" and doc["text"] == results[http_id]["text"]
        assert len(doc["regions"]) == len(results[http_id]["regions"])
        failed = (await client.get(query + "/v1/documents", params={"status": "failed"})).json()
        assert {by_name[n].document_id for n in bad} <= {d["document_id"] for d in failed}
        txt = await client.get(f"{query}/v1/documents/{http_id}/export", params={"format": "txt"})
        assert txt.text == results[http_id]["text"]
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
        assert 'ocrstream_messages_failed_total{error_type="NotAnImageError",stage="preprocess"} 1.0' in failed
    assert not stages.dead(), {s: stages.log_tail(s) for s in stages.dead()}


async def test_fixed_layout_template_cuts_named_fields(pipeline, stack_settings, tmp_path):
    """The sample form with its shipped template: regions carry field names and read the values."""
    from tools.render_samples import LAB_FIELDS, LAB_TITLE, render_form

    form = tmp_path / "lab.png"
    form.write_bytes(encode(render_form(LAB_TITLE, LAB_FIELDS)))
    good, = await submit_all(stack_settings, [form], template="lab-report")
    bad, = await submit_all(stack_settings, [form], template="no-such-form")
    results = await wait_for_results(stack_settings, [good.document_id, bad.document_id], timeout_s=300)

    done = results[good.document_id]
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
    assert failed["status"] == "failed"
    assert (failed["error"]["stage"], failed["error"]["type"]) == ("preprocess", "UnknownTemplateError")
    assert "lab-report" in failed["error"]["message"]  # lists the known templates


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
        recognized = {events.decode(events.RECOGNIZED, r.value)["document_id"]
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
    assert all(results[d]["status"] == "done" for d in all_ids)
    conn = await asyncpg.connect(stack_settings.postgres_dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM documents WHERE document_id = ANY($1::text[])"
                                     " AND status = 'done'", list(all_ids))
    finally:
        await conn.close()
    assert stored == len(all_ids)
    assert not stages.dead()


def test_cli_submit_wait_prints_the_text(pipeline, tmp_path):
    import subprocess
    import sys

    _, env = pipeline
    path = tmp_path / "cli.png"
    path.write_bytes(render("cli.png", ["SUBMITTED FROM THE CLI 31"]))
    out = subprocess.run([sys.executable, "-m", "services.cli", "submit", "--wait", "--timeout", "300", str(path)],
                         env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr
    assert "[done]" in out.stdout and cer([out.stdout.split("\n")[-2]], ["SUBMITTED FROM THE CLI 31"]) < 0.1, out.stdout

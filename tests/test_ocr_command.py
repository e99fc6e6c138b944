"""``ocrstream ocr``: real sample images through the real models, run as users run it (a
subprocess with no stack at all: no OCRSTREAM_* variable, no dev-stack settings file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from ocrstream.ocr.exports import ALTO_NS
from tools.render_samples import encode, render_page

REPO = Path(__file__).resolve().parents[1]
RECEIPT = REPO / "samples" / "receipt.png"
TRUNCATED = REPO / "samples" / "truncated.jpg"
RECEIPT_WORDS = ("CORNER", "GROCER", "INVOICE", "TOTAL", "25.50", "CHANGE")
NOTE = ["Meeting moved to Friday", "Room 4B at 10:30"]


def ocr(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``ocrstream ocr ARGS`` with no stack: no OCRSTREAM_* in the environment and no settings file;
    Kafka, S3 and PostgreSQL addresses that nothing listens on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRSTREAM_")}
    env.update(OCRSTREAM_ENV_FILE="/nonexistent/stack.env", OCRSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:9",
               OCRSTREAM_S3_ENDPOINT="http://127.0.0.1:9", OMP_WAIT_POLICY="PASSIVE",
               OCRSTREAM_POSTGRES_DSN="postgresql://nobody@127.0.0.1:9/none")
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", "ocr", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def note(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ocr") / "note.jpg"
    path.write_bytes(encode(render_page(NOTE, size=30), "JPEG", quality=90))
    return path


def test_ocr_prints_the_text_of_a_receipt_without_a_stack():
    result = ocr(str(RECEIPT))
    assert result.returncode == 0, result.stderr
    for word in RECEIPT_WORDS:
        assert word in result.stdout, result.stdout
    assert "==>" not in result.stdout  # one file: the text only


def test_ocr_json_lines_and_a_corrupt_file(note):
    result = ocr("--format", "json", str(RECEIPT), str(TRUNCATED), str(note))
    assert result.returncode == 1, result.stderr
    assert f"{TRUNCATED}: TruncatedImageError: " in result.stderr
    assert "[2/3]" in result.stderr and "1 of 3 file(s) failed" in result.stderr  # progress and summary
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["document_id"] for d in docs] == ["receipt.png", "note.jpg"]  # one JSON document per line
    texts = []
    for doc in docs:
        assert doc["status"] == "done" and len(doc["pages"]) == 1
        page = doc["pages"][0]
        words = [w for b in page["blocks"] for line in b["lines"] for r in line["regions"] for w in r["words"]]
        assert words
        for w in words:
            x0, y0, x1, y1 = w["box"]
            assert 0 <= x0 < x1 <= page["width"] and 0 <= y0 < y1 <= page["height"], (w, page)
            assert 0 <= w["confidence"] <= 1
        texts.append(" ".join(w["text"] for w in words))
    assert all(word in texts[0] for word in RECEIPT_WORDS), texts[0]
    assert "Friday" in texts[1] and "10:30" in texts[1], texts[1]
    # receipt fields without a template (ocrstream/ocr/receipt_fields.py); a note has none
    receipt = docs[0]["fields"]
    assert (receipt["total"]["text"], receipt["total"]["value"]) == ("25.50", 25.5)
    assert receipt["date"]["value"] == "2026-11-21" and receipt["vendor_name"]["text"] == "CORNER GROCER SDN BHD"
    assert docs[1]["fields"] == {}


def test_ocr_hocr_and_alto_are_xml_with_the_words(tmp_path, note):
    out = tmp_path / "out"
    result = ocr("--format", "hocr", "--output", str(out), str(RECEIPT), str(note))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["note.jpg.hocr", "receipt.png.hocr"]
    assert result.stdout == ""
    hocr = ET.fromstring((out / "receipt.png.hocr").read_text())
    words = [el.text for el in hocr.iter("{http://www.w3.org/1999/xhtml}span") if el.get("class") == "ocrx_word"]
    assert "GROCER" in words and "TOTAL" in words, words
    alto = ocr("--format", "alto", str(RECEIPT))
    assert alto.returncode == 0, alto.stderr
    strings = [s.get("CONTENT") for s in ET.fromstring(alto.stdout).iter(f"{{{ALTO_NS}}}String")]
    assert "GROCER" in strings and "25.50" in strings, strings


def test_ocr_with_a_template_reads_its_fields():
    result = ocr("--format", "json", "--template", "lab-report", str(REPO / "samples" / "lab-report.jpg"))
    assert result.returncode == 0, result.stderr
    regions = [r for b in json.loads(result.stdout)["pages"][0]["blocks"] for line in b["lines"] for r in line["regions"]]
    assert {"patient_id", "haemoglobin"} <= {r["field"]["name"] for r in regions}


@pytest.mark.parametrize("args, message", [
    (("--format", "hocr", str(RECEIPT), str(TRUNCATED)), "need --output"),
    (("--template", "no-such-template", str(RECEIPT)), "unknown template 'no-such-template'"),
    (("samples/missing.png",), "does not exist"),
])
def test_ocr_usage_errors_exit_2(args, message):
    result = ocr(*args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_txt_output_shows_where_a_page_ends():
    """A form feed is invisible in a terminal or pipe ("MondayMemo page 2"): people get a line."""
    out = ocr(str(REPO / "samples" / "memo.pdf"))
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split("\n[page break]\n")
    assert first.strip() and second.strip() and "\f" not in out.stdout

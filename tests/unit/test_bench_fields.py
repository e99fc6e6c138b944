"""bench/bench_fields.py's scoring without data or OCR: SROIE task 3's strict text match, the
spaceless and typed matches, and the keys found as printed in a page's transcription."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_fields  # noqa: E402

pytestmark = pytest.mark.unit

KEYS = {"company": "C W KHOO HARDWARE SDN BHD", "address": "NO.50,JALAN PBS 14/11,",
        "date": "29-12-2017", "total": "RM 9.00"}
TRANSCRIPTION = "C W KHOO HARDWARE SDN BHD NO.50 , JALAN PBS 14/11 , DATE 29-12-2017 TOTAL RM 9.00"


def fields(address: str) -> dict[str, dict]:
    return {"vendor_name": {"text": "C W Khoo Hardware Sdn Bhd"}, "vendor_address": {"text": address},
            "date": {"text": "29-12-2017", "value": "2017-12-29"}, "total": {"text": "9.00", "value": 9.0}}


def test_a_space_placed_otherwise_is_wrong_as_text_and_right_without_spaces():
    score = bench_fields.Score()
    score.add("r1", KEYS, fields("NO.50, JALAN PBS  14/11,"), case_sensitive=False)
    assert score.right == {"company": 1, "address": 0, "date": 1, "total": 0}
    assert score.spaceless == {"company": 1, "address": 1, "date": 1, "total": 0}  # "9.00" is not "RM9.00"
    assert score.typed == {"company": 1, "address": 0, "date": 1, "total": 1}
    assert [c[1] for c in score.confusions] == ["address", "total"]


def test_a_misread_letter_is_wrong_without_spaces_too():
    score = bench_fields.Score()
    score.add("r1", KEYS, fields("NO.5O,JALAN PBS 14/11,"), case_sensitive=False)
    assert score.spaceless["address"] == 0 and score.right["address"] == 0


def test_keys_as_printed_are_counted_only_against_a_transcription():
    score = bench_fields.Score()
    score.add("r1", KEYS, fields(KEYS["address"]), case_sensitive=False)
    assert score.transcribed == dict.fromkeys(KEYS, 0) and score.printed == dict.fromkeys(KEYS, 0)
    score.add("r2", KEYS, fields(KEYS["address"]), case_sensitive=False, transcription=TRANSCRIPTION)
    assert score.transcribed == dict.fromkeys(KEYS, 1)
    # the address key's "NO.50,JALAN" is not what the page's transcription has ("NO.50 , JALAN")
    assert score.printed == {"company": 1, "address": 0, "date": 1, "total": 1}


def test_the_report_prints_every_column(capsys):
    score = bench_fields.Score()
    score.add("r1", KEYS, fields("NO.50, JALAN PBS 14/11,"), case_sensitive=False, transcription=TRANSCRIPTION)
    bench_fields.report("dev", 1, score, [0.5], [0.001], confusions=5)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| **all**"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:] == ["0.500", "0.750", "0.750", "2 / 4 / 4", "3 / 4"]  # F1, typed, no spaces, counts, printed
    assert "r1 address: 'NO.50,JALAN PBS 14/11,' <- 'NO.50, JALAN PBS 14/11,'" in out


def test_ground_truth_boxes_become_regions_in_reading_order_with_words():
    """``--text truth``: a page's ground-truth boxes, given in any order, become regions in reading order
    (visual lines top to bottom, boxes left to right), one line id per visual line, words over the box;
    blank boxes are left out; the extractor reads its fields from them."""
    from ocrstream.ocr.document import Document
    from ocrstream.ocr.receipt_fields import extract_fields

    lines = [{"box": [200, 300, 280, 330], "text": "9.00"},
             {"box": [20, 300, 140, 330], "text": "TOTAL"},
             {"box": [20, 20, 420, 50], "text": "C W KHOO HARDWARE SDN BHD"},
             {"box": [20, 60, 400, 90], "text": "NO.50,JALAN PBS 14/11,"},
             {"box": [20, 120, 300, 150], "text": "DATE: 29-12-2017"},
             {"box": [20, 200, 300, 230], "text": "1 X 9.00 9.00"},
             {"box": [20, 400, 90, 430], "text": "  "}]
    regions = bench_fields.truth_regions(lines)
    assert [r["text"] for r in regions] == ["C W KHOO HARDWARE SDN BHD", "NO.50,JALAN PBS 14/11,", "DATE: 29-12-2017",
                                            "1 X 9.00 9.00", "TOTAL", "9.00"]
    assert [r["line_index"] for r in regions] == [0, 1, 2, 3, 4, 4]
    assert [r["order"] for r in regions] == list(range(6))
    assert [w["text"] for w in regions[2]["words"]] == ["DATE:", "29-12-2017"]
    date_box = regions[2]["words"][1]["box"]
    assert 20 < date_box[0] < date_box[2] <= 300  # the second word sits in the right part of its line's box
    doc = Document.from_results({"document_id": "r1", "status": "done",
                                 "pages": [{"page_index": 0, "width": 500, "height": 500}], "regions": regions})
    found = {k: v.as_json() for k, v in extract_fields(doc).items()}
    assert found["total"]["value"] == 9.0
    assert found["date"]["value"] == "2017-12-29"

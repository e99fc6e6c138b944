"""The document model and its hOCR / ALTO exports (structural checks: no ALTO XSD is
obtainable from a registry package here)."""

from __future__ import annotations

import re
from xml.etree import ElementTree as ET

from ocrstream.ocr.document import Document
from ocrstream.ocr.exports import ALTO_NS, to_alto, to_hocr

EVENT = {
    "document_id": "doc1", "status": "done", "document": {"filename": "r.png"},
    "pages": [{"page_index": 0, "width": 400, "height": 300}],
    "regions": [
        {"region_id": "p0-r0", "page_index": 0, "line_index": 0, "order": 0, "box": [10, 10, 200, 40],
         "text": "TOTAL RM", "confidence": 0.9,
         "words": [{"text": "TOTAL", "box": [10, 10, 110, 40], "confidence": 0.95},
                   {"text": "RM", "box": [120, 10, 200, 40], "confidence": 0.85}]},
        {"region_id": "p0-r1", "page_index": 0, "line_index": 0, "order": 1, "box": [250, 12, 330, 41],
         "text": "12.50", "confidence": 0.99},
        {"region_id": "p0-r2", "page_index": 0, "block_index": 1, "line_index": 1, "order": 2, "box": [10, 60, 150, 90],
         "text": "THANK YOU", "confidence": 0.8},
    ],
}


def test_text_follows_visual_lines_and_blocks():
    doc = Document.from_results(EVENT)
    assert doc.render_text() == "TOTAL RM 12.50\nTHANK YOU"
    page = doc.pages[0]
    assert [[line.text for line in block.lines] for block in page.blocks] == [["TOTAL RM 12.50"], ["THANK YOU"]]
    assert [w.text for w in page.lines[0].words] == ["TOTAL", "RM", "12.50"]
    assert page.blocks[0].box == (10, 10, 330, 41)


def test_hocr_is_xhtml_with_boxes_and_confidences():
    root = ET.fromstring(to_hocr(Document.from_results(EVENT)).split("\n", 2)[2])  # after prolog + doctype
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    words = root.findall(".//h:span[@class='ocrx_word']", ns)
    assert [w.text for w in words] == ["TOTAL", "RM", "12.50", "THANK YOU"]
    assert words[0].get("title") == "bbox 10 10 110 40; x_wconf 95"
    lines = root.findall(".//h:span[@class='ocr_line']", ns)  # visual lines: label + value regions together
    assert [line.get("title") for line in lines] == ["bbox 10 10 330 41", "bbox 10 60 150 90"]
    assert len(root.findall(".//h:div[@class='ocr_carea']", ns)) == 2  # blocks
    page = root.find(".//h:div[@class='ocr_page']", ns)
    assert page.get("title").startswith("bbox 0 0 400 300")
    for el in root.iter():
        if el.get("title", "").startswith("bbox"):
            assert re.fullmatch(r"bbox \d+ \d+ \d+ \d+(;.*)?", el.get("title"))


def test_alto_structure():
    root = ET.fromstring(to_alto(Document.from_results(EVENT)).encode())
    q = lambda t: f"{{{ALTO_NS}}}{t}"  # noqa: E731
    assert root.tag == q("alto")
    assert root.find(f"{q('Description')}/{q('MeasurementUnit')}").text == "pixel"
    page = root.find(f".//{q('Page')}")
    assert (page.get("WIDTH"), page.get("HEIGHT")) == ("400", "300")
    lines = root.findall(f".//{q('TextLine')}")
    assert len(lines) == 2 and len(root.findall(f".//{q('TextBlock')}")) == 2
    strings = [s.get("CONTENT") for s in root.findall(f".//{q('String')}")]
    assert strings == ["TOTAL", "RM", "12.50", "THANK YOU"]
    assert len(lines[0].findall(q("SP"))) == 2  # between the three words of the first line
    first = root.find(f".//{q('String')}")
    assert (first.get("HPOS"), first.get("VPOS"), first.get("WIDTH"), first.get("HEIGHT"), first.get("WC")) == (
        "10", "10", "100", "30", "0.950")


def test_searchable_pdf_of_a_png_keeps_its_pixels_and_places_words_in_their_boxes():
    """PNG originals (here with an alpha channel, flattened onto white) are embedded losslessly;
    every word is extracted (pypdfium2) from inside its own box. The stored-text CER check on
    real recognised pages is in tests/test_bucket_e2e.py."""
    import io

    import numpy as np
    import pikepdf
    import pypdfium2 as pdfium
    from PIL import Image

    from ocrstream.ocr.exports import to_searchable_pdf

    rgb = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    opaque = io.BytesIO()
    Image.fromarray(np.dstack([rgb, np.full((300, 400), 255, np.uint8)])).save(opaque, "PNG")  # RGBA
    doc = Document.from_results(EVENT)
    pdf = to_searchable_pdf(doc, opaque.getvalue())

    with pikepdf.open(io.BytesIO(pdf)) as out:
        (image,) = out.pages[0].get_images().values()
        assert np.array_equal(np.asarray(pikepdf.PdfImage(image).as_pil_image().convert("RGB")), rgb)
    page = pdfium.PdfDocument(pdf)[0]
    textpage = page.get_textpage()
    w_pt, h_pt = page.get_size()
    sx, sy = w_pt / 400, h_pt / 300
    words = [w for r in EVENT["regions"] for w in (r.get("words") or [{"text": t, "box": r["box"]} for t in [r["text"]]])]
    for word in words:
        x0, y0, x1, y1 = word["box"]
        assert word["text"] in textpage.get_text_bounded(x0 * sx, h_pt - y1 * sy, x1 * sx, h_pt - y0 * sy)
    assert " ".join(textpage.get_text_range().split()) == "TOTAL RM 12.50 THANK YOU"


def test_searchable_pdf_refuses_what_is_not_a_page():
    import pytest

    from ocrstream.ocr.exports import to_searchable_pdf

    with pytest.raises(ValueError):
        to_searchable_pdf(Document.from_results(EVENT), b"not an image at all")

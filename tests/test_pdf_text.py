"""PDF text layers page by page (issue 20), on generated documents: born-digital pages read from
the PDF itself, scanned pages and earlier invisible OCR layers OCRed, garbage layers and layers over
the bound OCRed, mixed PDFs decided page by page, ``/Rotate`` pages in displayed coordinates, the
searchable-PDF export leaving born-digital pages alone; through :class:`OCRPipeline`, the stages'
own code (decoder worker -> preprocess -> recognize -> store post-processing) and ``ocrstream ocr``.
"""

from __future__ import annotations

import asyncio
import io
import json

import cv2
import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from fpdf import FPDF

from ocrstream.ocr import pdftext
from ocrstream.ocr.decode import open_document
from ocrstream.ocr.document import Document
from ocrstream.ocr.evaluation import cer
from ocrstream.ocr.exports import to_alto, to_hocr, to_searchable_pdf
from ocrstream.ocr.predictor import OCRPipeline
from ocrstream.settings import Settings
from tests.test_ocr_command import ocr
from tests.unit.test_pipeline import SAMPLES, stages_document

INVOICE = ["ACME SUPPLIES SDN BHD", "INVOICE NO: INV-2026-0042", "TOTAL INCL. GST 50.00", "CASH 24.50",
           "Contact: finance@example.com"]


class NoRecognizer:
    """A recogniser that must not be called (a born-digital page is never OCRed)."""

    name, provider = "none", "none"

    def recognize(self, crops):
        raise AssertionError(f"OCR was run on {len(crops)} crops")


def born_digital(pages: list[list[str]], rotate: int = 0) -> bytes:
    """An A4 PDF (fpdf2, Helvetica) with one text line per entry, optionally every page /Rotate'd."""
    pdf = FPDF(format="A4")
    pdf.set_font("Helvetica", size=14)
    for lines in pages:
        pdf.add_page()
        for i, line in enumerate(lines):
            pdf.text(20, 30 + 12 * i, line)
    return _rotate(bytes(pdf.output()), rotate)


def scanned(image: bytes, invisible: str | None = None, rotate: int = 0) -> bytes:
    """A PDF page holding ``image`` (a scan) over the whole page, optionally with an invisible text
    layer (render mode 3, as an earlier OCR pass leaves it)."""
    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.image(io.BytesIO(image), x=0, y=0, w=pdf.w)
    if invisible:
        pdf.set_font("Helvetica", size=14)
        with pdf.local_context(text_mode="INVISIBLE"):
            pdf.text(20, 30, invisible)
    return _rotate(bytes(pdf.output()), rotate)


def _rotate(data: bytes, degrees: int) -> bytes:
    if not degrees:
        return data
    pdf = pikepdf.open(io.BytesIO(data))
    for page in pdf.pages:
        page.Rotate = degrees
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def merge(*documents: bytes) -> bytes:
    out = pikepdf.new()
    for data in documents:
        out.pages.extend(pikepdf.open(io.BytesIO(data)).pages)
    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


def garbage_layer() -> bytes:
    """A page whose font has no ToUnicode map (custom glyph names): PDFium flags every character."""
    pdf = pikepdf.new()
    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica,
                              Encoding=pikepdf.Dictionary(Differences=pikepdf.Array(
                                  [65] + [pikepdf.Name(f"/g{i}") for i in range(26)])))
    page = pdf.add_blank_page(page_size=(595, 842))
    page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
    page.Contents = pdf.make_stream(b"BT /F1 18 Tf 40 700 Td (ABCDEFGHIJ KLMNOP) Tj ET")
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def pdfium_text(data: bytes, index: int) -> str:
    """pypdfium2's own extraction of a page, whitespace collapsed per line."""
    doc = pdfium.PdfDocument(data)
    text = doc[index].get_textpage().get_text_range()
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(device="cpu")


@pytest.fixture(scope="module")
def ocr_pipeline(settings) -> OCRPipeline:
    return OCRPipeline.from_settings(settings, postprocess=False)


@pytest.fixture(scope="module")
def receipt() -> bytes:
    return (SAMPLES / "receipt.png").read_bytes()


# --------------------------------------------------------------------------------- decisions
def test_a_born_digital_pdf_is_read_from_its_text_layer_without_ocr():
    data = born_digital([INVOICE, ["Second page", "with two lines."]])
    pipeline = OCRPipeline(NoRecognizer(), None)
    doc = pipeline(data)
    assert [p.text_source for p in doc.pages] == ["pdf-text", "pdf-text"]
    for index, page in enumerate(doc.pages):
        assert cer([page.text], [pdfium_text(data, index)]) <= 0.001
    assert doc.pages[0].text.splitlines() == INVOICE  # exact: finance@example.com, no space in it
    regions = [r for page in doc.pages for line in page.lines for r in line.regions]
    assert {r.source for r in regions} == {"pdf-text"} and {r.confidence for r in regions} == {1.0}
    assert pipeline.text_sources == {"pdf-text": 2}
    # words in page pixels at the render dpi, inside the page, left to right
    page = doc.pages[0]
    with open_document(data) as opened:
        assert (page.width, page.height) == opened.page_sizes[0] == opened.page(0).shape[1::-1]
    words = page.lines[0].words
    assert [w.text for w in words] == INVOICE[0].split()
    assert all(0 <= w.box[0] < w.box[2] <= page.width and 0 <= w.box[1] < w.box[3] <= page.height for w in words)
    assert [w.box[0] for w in words] == sorted(w.box[0] for w in words)


def assert_boxes_cover_the_ink(page, pixels: np.ndarray) -> None:
    """Every line box holds ink, and (nearly) every inked pixel lies in a line box."""
    ink = cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY) < 128
    covered = np.zeros_like(ink)
    for line in page.lines:
        x0, y0, x1, y1 = (int(round(v)) for v in line.box)
        assert ink[y0:y1 + 1, x0:x1 + 1].sum() > 50, line.text
        covered[max(0, y0 - 2):y1 + 3, max(0, x0 - 2):x1 + 3] = True
    assert ink[covered].sum() >= 0.98 * ink.sum()


def test_the_text_layer_boxes_lie_on_the_rendered_text():
    data = born_digital([INVOICE])
    doc = OCRPipeline(NoRecognizer(), None)(data)
    with open_document(data) as opened:
        assert_boxes_cover_the_ink(doc.pages[0], opened.page(0))


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_rotated_born_digital_page_has_boxes_where_the_viewer_shows_the_text(rotate):
    upright, turned = born_digital([INVOICE]), born_digital([INVOICE], rotate)
    doc = OCRPipeline(NoRecognizer(), None)(turned)
    page = doc.pages[0]
    with open_document(turned) as opened:
        pixels = opened.page(0)
    assert pixels.shape[1::-1] == (page.width, page.height)
    assert (page.width > page.height) == (rotate in (90, 270))
    assert page.text == OCRPipeline(NoRecognizer(), None)(upright).pages[0].text
    assert_boxes_cover_the_ink(page, pixels)


def landscape_by_rotate(lines: list[str]) -> bytes:
    """A landscape page as many generators make one: a portrait A4 page with ``/Rotate 90`` whose
    text is drawn turned counter-clockwise in user space, so a viewer shows it upright."""
    pdf = FPDF(format="A4")
    pdf.set_font("Helvetica", size=14)
    pdf.add_page()
    for i, line in enumerate(lines):
        x, y = 30 + 12 * i, pdf.h - 20  # displayed (20 mm, 30 mm + 12 i) from the top-left
        with pdf.rotation(90, x, y):
            pdf.text(x, y, line)
    return _rotate(bytes(pdf.output()), 90)


def test_a_landscape_rotate_page_drawn_upright_reads_in_order_with_boxes_on_the_text():
    data = landscape_by_rotate(INVOICE)
    doc = OCRPipeline(NoRecognizer(), None)(data)
    page = doc.pages[0]
    assert page.width > page.height and page.text_source == "pdf-text"
    assert page.text.splitlines() == INVOICE
    with open_document(data) as opened:
        assert_boxes_cover_the_ink(page, opened.page(0))
    first, second = page.lines[0].box, page.lines[1].box
    assert first[1] < second[1] and first[2] - first[0] > 5 * (first[3] - first[1])  # horizontal, top first
    # hOCR and ALTO give the same displayed page and boxes
    hocr, alto = to_hocr(doc), to_alto(doc)
    assert f"bbox 0 0 {page.width} {page.height}" in hocr
    x0, y0, x1, y1 = (int(round(v)) for v in page.lines[0].words[0].box)
    assert f"bbox {x0} {y0} {x1} {y1}" in hocr
    assert f'WIDTH="{page.width}" HEIGHT="{page.height}"' in alto


def test_the_decision_rules():
    visible = pdftext.TextLayer(chars=10, visible=10, lines=[pdftext.TextLine("x", [0, 0, 1, 1])])
    assert pdftext.decide(visible, "auto") == ("pdf-text", "text-layer")
    assert pdftext.decide(visible, "ocr") == ("ocr", "mode")
    assert pdftext.decide(None, "auto") == ("ocr", "not-pdf")
    hidden = pdftext.TextLayer(chars=10, invisible=10, lines=visible.lines)
    assert pdftext.decide(hidden, "auto") == ("ocr", "invisible-text")
    assert pdftext.decide(hidden, "text") == ("pdf-text", "text-layer")
    pictured = pdftext.TextLayer(chars=10, visible=10, image_fraction=0.9, lines=visible.lines)
    assert pdftext.decide(pictured, "auto") == ("ocr", "text-and-images")
    assert pdftext.decide(pdftext.TextLayer(chars=10, visible=10, garbage=2, lines=visible.lines),
                          "text") == ("ocr", "garbage-text")
    assert pdftext.decide(pdftext.TextLayer(), "text") == ("ocr", "no-text")
    with pytest.raises(ValueError, match="unknown PDF text mode"):
        pdftext.decide(visible, "sometimes")
    with pytest.raises(ValueError, match="unknown PDF text mode"):
        OCRPipeline(NoRecognizer(), None, pdf_text="never")


def test_a_text_layer_over_the_bound_is_not_read():
    data = born_digital([INVOICE])
    chars = pdfium.PdfDocument(data)[0].get_textpage().count_chars()
    with open_document(data) as opened:
        at_bound = opened.text_layer(0, max_chars=chars)
        over = opened.text_layer(0, max_chars=chars - 1)
    assert not at_bound.too_large and at_bound.lines
    assert over.too_large and not over.lines
    assert pdftext.decide(at_bound, "auto")[0] == "pdf-text"
    assert pdftext.decide(over, "auto") == ("ocr", "text-too-large")
    assert pdftext.decide(over, "text") == ("ocr", "text-too-large")


def test_a_garbage_text_layer_counts_as_no_text():
    with open_document(garbage_layer()) as opened:
        layer = opened.text_layer(0, pdftext.MAX_PAGE_CHARS)
    assert layer.garbage >= 16 and not layer.lines
    assert pdftext.decide(layer, "auto") == ("ocr", "garbage-text")
    assert pdftext.decide(layer, "text") == ("ocr", "garbage-text")
    for code in (0xE000, 0xF8FF, 0xFFFD, 0x01, 0x9F, 0x10FFFD):
        assert pdftext._is_garbage_code(code)
    assert not any(pdftext._is_garbage_code(ord(c)) for c in "Aé€@ 字")


# ---------------------------------------------------------------------------- with the models
def test_an_earlier_invisible_ocr_layer_is_replaced_by_our_reading(ocr_pipeline, receipt):
    data = scanned(receipt, invisible="C0RNER GR0CER WR0NG TEXT")
    doc = ocr_pipeline(data)
    assert doc.pages[0].text_source == "ocr"
    assert "CORNER" in doc.render_text() and "WR0NG" not in doc.render_text()
    ocr_pipeline.pdf_text = "text"  # trust any text layer
    try:
        trusted = ocr_pipeline(data)
    finally:
        ocr_pipeline.pdf_text = "auto"
    assert trusted.pages[0].text_source == "pdf-text" and trusted.render_text() == "C0RNER GR0CER WR0NG TEXT"


def test_a_mixed_pdf_is_decided_page_by_page(ocr_pipeline, receipt):
    data = merge(born_digital([INVOICE]), scanned(receipt), garbage_layer())
    doc = ocr_pipeline(data)
    assert [p.text_source for p in doc.pages] == ["pdf-text", "ocr", "ocr"]
    assert doc.pages[0].text.splitlines() == INVOICE
    assert "CORNER" in doc.pages[1].text and "TOTAL" in doc.pages[1].text
    sources = {r.source for line in doc.pages[1].lines for r in line.regions}
    assert sources == {"ocr"}
    ocr_pipeline.pdf_text = "ocr"
    try:
        forced = ocr_pipeline(born_digital([INVOICE]))
    finally:
        ocr_pipeline.pdf_text = "auto"
    assert forced.pages[0].text_source == "ocr" and "TOTAL" in forced.render_text()


def test_a_rotated_scan_is_read_as_the_viewer_shows_it(ocr_pipeline, receipt):
    doc = ocr_pipeline(scanned(receipt, rotate=90), document_id="r")
    page = doc.pages[0]
    assert page.width > page.height  # landscape as displayed
    assert page.text_source == "ocr"
    # the receipt is shown turned a quarter: the orientation clean-up (on by default) reads it
    assert "CORNER GROCER" in doc.render_text() and "TOTAL INCL. GST 25.50" in rows(doc.render_text())


@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_the_searchable_pdf_places_words_on_rotated_pages(rotate):
    base = _rotate(bytes(_blank_pdf()), rotate)
    w, h = (int(v) for v in pdfium.PdfDocument(base).get_page_size(0))  # displayed points = px at 72 dpi
    box = [100.0, 200.0, 180.0, 220.0]
    event = {"document_id": "d", "status": "done", "pages": [{"page_index": 0, "width": w, "height": h}],
             "regions": [{"region_id": "r", "page_index": 0, "line_index": 0, "order": 0, "box": box,
                          "text": "WORLD", "confidence": 0.9, "words": [{"text": "WORLD", "box": box,
                                                                         "confidence": 0.9}]}]}
    out = pdfium.PdfDocument(to_searchable_pdf(Document.from_results(event), base))
    page = out[0]
    textpage = page.get_textpage()
    text = textpage.get_text_range()
    start = text.index("WORLD")
    display = pdftext._DisplayMap(page, 1.0)
    first, last = display.box(*textpage.get_charbox(start)), display.box(*textpage.get_charbox(start + 4))
    assert abs(first[0] - box[0]) < 3 and abs(last[2] - box[2]) < 3  # left to right as displayed
    assert box[1] - 3 < first[1] < first[3] < box[3] + 3


def _blank_pdf() -> bytes:
    pdf = FPDF(unit="pt", format=(300, 400))
    pdf.add_page()
    return bytes(pdf.output())


def test_the_searchable_pdf_leaves_a_born_digital_page_as_it_is(ocr_pipeline, receipt):
    data = merge(born_digital([INVOICE]), scanned(receipt))
    doc = ocr_pipeline(data)
    out = to_searchable_pdf(doc, data)
    assert pdfium_text(out, 0) == pdfium_text(data, 0)  # no second text layer on page 1
    assert "CORNER" in pdfium_text(out, 1)  # the scan got ours


def test_the_stages_read_a_mixed_pdf_as_the_pipeline_does(settings, ocr_pipeline, receipt):
    data = merge(born_digital([INVOICE]), scanned(receipt))
    staged, regions = asyncio.run(stages_document(settings, ocr_pipeline.recognizer, ocr_pipeline.postprocessor
                                                  or _postprocessor(), data))
    whole = ocr_pipeline(data)
    assert [p.text_source for p in staged.pages] == ["pdf-text", "ocr"]
    assert staged.pages[0].text == whole.pages[0].text == "\n".join(INVOICE)
    layer_regions = [r for r in regions if r["page_index"] == 0]
    assert {r["source"] for r in layer_regions} == {"pdf-text"} and all(r["confidence"] == 1.0 for r in layer_regions)
    assert "layer_text" not in layer_regions[0]
    assert "CORNER" in staged.pages[1].text


def _postprocessor():
    from ocrstream.ocr.postprocess.processor import PostProcessor

    return PostProcessor()


def test_ocr_command_json_shows_each_page_s_text_source(tmp_path, receipt):
    path = tmp_path / "mixed.pdf"
    path.write_bytes(merge(born_digital([INVOICE]), scanned(receipt)))
    run = ocr("--format", "json", str(path))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert [p["text_source"] for p in doc["pages"]] == ["pdf-text", "ocr"]
    first = [r for b in doc["pages"][0]["blocks"] for line in b["lines"] for r in line["regions"]]
    assert {r["source"] for r in first} == {"pdf-text"}
    assert "finance@example.com" in run.stdout


# ------------------------------------------------------------- turned and skewed images (Pillow)
def pillow_turned(data: bytes, degrees: float, expand_fill: str = "white") -> bytes:
    """``data`` (an image) turned counter-clockwise by ``degrees`` with Pillow, as PNG."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        turned = image.convert("RGB").rotate(degrees, expand=True, fillcolor=expand_fill,
                                             resample=Image.Resampling.BICUBIC)
    out = io.BytesIO()
    turned.save(out, "PNG")
    return out.getvalue()


def rows(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_turned_receipt_reads_as_upright_by_default(ocr_pipeline, receipt, degrees):
    upright = ocr_pipeline(receipt).render_text()
    turned = ocr_pipeline(pillow_turned(receipt, degrees)).render_text()
    assert "CORNER GROCER" in turned and "TOTAL INCL. GST 25.50" in rows(turned)
    assert cer([turned], [upright]) < 0.02


@pytest.mark.parametrize("degrees", [6.0, -12.0])
def test_a_skewed_receipt_keeps_each_amount_on_its_label_s_line(ocr_pipeline, receipt, degrees):
    text = ocr_pipeline(pillow_turned(receipt, degrees)).render_text()
    lines = rows(text)
    assert "TOTAL INCL. GST 25.50" in lines and "CASH 50.00" in lines and "CHANGE 24.50" in lines, text


def test_ocr_command_reads_a_turned_receipt_by_default(tmp_path, receipt):
    path = tmp_path / "turned.png"
    path.write_bytes(pillow_turned(receipt, 90))
    run = ocr(str(path))
    assert run.returncode == 0, run.stderr
    assert "CORNER GROCER" in run.stdout and "TOTAL INCL. GST 25.50" in rows(run.stdout)

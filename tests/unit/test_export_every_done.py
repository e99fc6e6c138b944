"""Issue 24: every document that is read (``done``) exports to a searchable PDF, hOCR and ALTO.

Every case of the hostile corpus (tools/hostile_corpus.py) that must come out ``done`` at some
door - including the cases the exporter used to refuse: a 16-bit TIFF, multi-frame GIF and WebP
(every frame is a page, in the decoder and the exporter), a PNG whose zTXt chunk inflates to
200 MB, a page under 300 nested /Pages nodes - is read by the real OCRPipeline (real models, no
stack) under the test budget and exported in the three formats. The exported PDF has exactly
the decoder's pages, and every OCR word is in its page's text layer.
"""

from __future__ import annotations

import io
import re
from xml.etree import ElementTree as ET

import pypdfium2 as pdfium
import pytest

from ocrstream.ocr.decode import Budget as DecodeBudget
from ocrstream.ocr.decode import open_document
from ocrstream.ocr.exports import ALTO_NS, to_alto, to_hocr, to_searchable_pdf
from ocrstream.ocr.predictor import OCRPipeline
from ocrstream.settings import Settings
from tools.hostile_corpus import TEST_BUDGET_ENV, Budget, corpus

SETTINGS = Settings.from_env({**TEST_BUDGET_ENV, "OCRSTREAM_DEVICE": "cpu"})
DONE = [c for c in corpus() if any(e.outcome == "done" for e in c.expect.values())]
NEW = {"tiff-16bit", "webp-blank-first-frame", "gif-animated", "png-ztxt-bomb", "pdf-nested"}


@pytest.fixture(scope="module")
def pipeline() -> OCRPipeline:
    return OCRPipeline.from_settings(SETTINGS)


def test_the_done_cases_include_the_ones_the_exporter_refused():
    assert NEW <= {c.name for c in DONE} and len(DONE) >= 30


@pytest.mark.parametrize("case", DONE, ids=[c.name for c in DONE])
def test_every_done_case_exports_in_every_format(case, pipeline):
    data = case.make(Budget.from_settings(SETTINGS))
    budget = DecodeBudget.from_settings(SETTINGS)
    doc = pipeline(data, document_id=case.name)
    with open_document(data, budget) as opened:
        decoder_pages = len(opened)
    assert len(doc.pages) == decoder_pages

    pdf = to_searchable_pdf(doc, data, budget)
    rendered = pdfium.PdfDocument(pdf)
    assert len(rendered) == decoder_pages
    for page in doc.pages:
        words = [w.text for b in page.blocks for ln in b.lines for w in ln.words if w.text.strip()]
        layer = " ".join(rendered[page.page_index].get_textpage().get_text_range().split())
        assert all(w in layer for w in words), (page.page_index, words, layer)

    hocr = ET.fromstring(to_hocr(doc).split("\n", 2)[2])
    assert len([d for d in hocr.iter() if d.get("class") == "ocr_page"]) == decoder_pages
    alto = ET.fromstring(to_alto(doc).split("\n", 1)[1])
    assert len(alto.findall(f".//{{{ALTO_NS}}}Page")) == decoder_pages
    for line in (case.expect.get(next(iter(case.expect))).text or ()):  # the text that had to be read
        assert re.sub(r"\W", "", line) in re.sub(r"\W", "", " ".join(
            " ".join(w.text for w in ln.words) for p in doc.pages for b in p.blocks for ln in b.lines)), line


def test_frames_are_pages_in_the_reading_and_the_export(pipeline):
    """The blank first frame of an animated WebP no longer hides the text of the second."""
    case = next(c for c in DONE if c.name == "webp-blank-first-frame")
    data = case.make(Budget.from_settings(SETTINGS))
    doc = pipeline(data)
    assert [bool(p.blocks) for p in doc.pages] == [False, True]
    assert "SECOND FRAME TEXT 92" in doc.render_text().replace("\n", " ")
    assert len(pdfium.PdfDocument(to_searchable_pdf(doc, data))) == 2


ZTXT_PEAK = """
import resource, sys
from ocrstream.ocr.document import Document
from ocrstream.ocr.exports import to_searchable_pdf
from tools.hostile_corpus import png_ztxt_bomb, tiff_16bit
doc = Document.from_results({"document_id": "d", "status": "done", "regions": [],
                             "pages": [{"page_index": 0, "width": 100, "height": 100}]})
to_searchable_pdf(doc, tiff_16bit("WARM UP"))  # imports and first-use allocations
data = png_ztxt_bomb("ZTXT BOMB PAGE 200", inflated=int(sys.argv[1]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
to_searchable_pdf(doc, data)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_the_ztxt_bomb_is_never_inflated():
    """Exporting the page whose zTXt chunk inflates to 200 MB raises the peak RSS of a fresh
    process by far less than 200 MB: libpng (the decoder) truncates the chunk, Pillow (img2pdf)
    refuses it past PngImagePlugin.MAX_TEXT_CHUNK (1 MB), and the exporter then embeds the
    decoder's page."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", ZTXT_PEAK, str(200 * 1024**2)], capture_output=True, text=True,
                         check=True, timeout=120)
    grown_mib = float(out.stdout.split()[-1])
    assert grown_mib < 50, grown_mib


def test_an_original_that_is_not_a_page_is_a_value_error(pipeline):
    doc = pipeline(next(c for c in DONE if c.name == "bmp").make(Budget.from_settings(SETTINGS)))
    with pytest.raises(ValueError, match="NotAnImageError"):
        to_searchable_pdf(doc, b"%!PS-Adobe-3.0\n")
    with pytest.raises(ValueError, match="has 2 pages, the document 1"):
        to_searchable_pdf(doc, io.BytesIO(next(c for c in DONE if c.name == "tiff-two-pages").make(
            Budget.from_settings(SETTINGS))).getvalue())

"""Issue 24, "silent failures made loud": a page with ink but no text is flagged for review (the
ink measure and the rule; tests/test_pipeline_e2e.py checks the flag through the stages), and a
PDF page with odd boxes is normalised so its born-digital text is found."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ocrstream.ocr import cleanup
from ocrstream.ocr.decode import open_document
from ocrstream.ocr.postprocess.processor import silent_pages
from ocrstream.ocr.predictor import OCRPipeline
from ocrstream.settings import Settings
from tools.hostile_corpus import pdf_text_in_box
from tools.render_samples import render_page

THRESHOLD = Settings().review_ink_fraction


def a4(*marks: np.ndarray) -> np.ndarray:
    page = np.full((1754, 1240, 3), 255, np.uint8)
    for k, mark in enumerate(marks):
        page[100 + 200 * k:100 + 200 * k + mark.shape[0], 100:100 + mark.shape[1]] = mark
    return page


def ink(page: np.ndarray) -> float:
    return cleanup.ink_fraction(cleanup.apply(page)[0])


def barcode() -> np.ndarray:
    """Bars: ink the line detector finds no text in (checked below)."""
    page = np.full((1400, 1000, 3), 255, np.uint8)
    for x in range(100, 900, 14):
        cv2.rectangle(page, (x, 400), (x + (3 if x % 28 else 7), 800), (0, 0, 0), -1)
    return page


def test_ink_separates_one_text_line_from_a_noisy_blank_scan():
    line = np.asarray(render_page(["ONE SHORT LINE"], size=28))[:, :, ::-1]
    noise = np.random.default_rng(0).normal(0, 10, (1754, 1240, 1))
    blank = np.clip(235 + noise, 0, 255).astype(np.uint8).repeat(3, axis=2)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", blank, [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_COLOR)
    assert ink(a4(line)) > THRESHOLD > max(ink(blank), ink(jpeg), ink(a4()))
    assert ink(np.zeros((1754, 1240, 3), np.uint8)) == 0  # an all-black page: no marks on paper
    assert ink(barcode()) > 100 * THRESHOLD


def test_silent_pages_are_pages_with_ink_and_no_text():
    pages = [(0, 0.05), (1, 0.05), (2, 0.0), (3, None), (4, THRESHOLD)]
    texts = [(0, "TOTAL 12.50"), (1, "  "), (3, "")]
    assert silent_pages(pages, texts, THRESHOLD) == [1, 4]
    assert silent_pages(pages, texts, 1.0) == []


def test_a_barcode_page_has_no_text_and_enough_ink_to_be_flagged():
    pipeline = OCRPipeline.from_settings(Settings(device="cpu"))
    doc = pipeline(cv2.imencode(".png", barcode())[1].tobytes())
    assert doc.render_text().strip() == ""


@pytest.mark.parametrize("media,crop,at", [
    ([0, 0, -612, -792], None, (-540, -92)),      # negative, corners reversed
    ([612, 792, 0, 0], None, (72, 700)),          # reversed
    ([-612, -792, 0, 0], [0, 0, 612, 792], (-540, -92)),  # a crop box that misses the media box
    ([0, 0, 612, 792], [-612, -792, 0, 0], (72, 700)),
], ids=["negative", "reversed", "crop-outside-negative-media", "negative-crop-outside-media"])
def test_odd_boxes_are_normalised_and_the_born_digital_text_is_found(media, crop, at):
    data = pdf_text_in_box("ODD BOX TEXT 42", media, at, crop)
    with open_document(data) as document:
        assert document.page_sizes == [(1700, 2200)]  # US Letter at 200 dpi
        assert (crop is not None) == bool(document.normalised)
        layer = document.text_layer(0, 10_000)
        assert layer is not None and [ln.text for ln in layer.lines] == ["ODD BOX TEXT 42"]
        assert document.page(0).min() == 0  # the text is rendered too

"""The hostile corpus (tools/hostile_corpus.py) is what its table says, without any stack:
bombs over the budget they are sized from, odd files readable by Pillow, expectations named
from our error taxonomy. The end-to-end run is tests/test_hostile.py."""

from __future__ import annotations

import io
import struct

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageOps

from ocrstream.errors import DEAD_LETTER_TYPES
from tools.hostile_corpus import ALL_DOORS, Budget, Door, corpus, submissions

BUDGET = Budget(max_document_bytes=1024**2, max_image_pixels=4_000_000, max_document_pixels=10_000_000,
                max_pages=200, pdf_dpi=200)
CASES = {c.name: c for c in corpus()}


@pytest.fixture(scope="module")
def data() -> dict[str, bytes]:
    return {name: case.make(BUDGET) for name, case in CASES.items()}


def test_table_covers_the_issue_with_typed_expectations():
    hostile = [c for c in corpus() if not c.control]
    assert len(hostile) >= 40 and len(CASES) == len(corpus())
    assert {d for _, d in submissions()} == set(ALL_DOORS)
    for case in corpus():
        for door, expect in case.expect.items():
            assert expect.outcome in ("done", "failed", "refused"), case.name
            if expect.outcome == "failed":
                assert expect.error_type in DEAD_LETTER_TYPES and expect.stage in ("ingest", "preprocess"), case.name
            if expect.outcome == "refused":
                assert door is not Door.RAW and expect.http_status in (400, 401, 403, 413, 415, 422, 429), case.name
    assert CASES["control-after"] is corpus()[-1]


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_bombs_are_just_over_the_budget_they_are_sized_from(data):
    assert len(data["over-limit"]) > BUDGET.max_document_bytes == len(data["at-limit"])
    assert struct.unpack(">II", data["png-bomb"][16:24]) == (20_000, 20_000)  # IHDR (Pillow refuses to open it)
    assert len(data["png-bomb"]) < 200_000
    w, h = image(data["jpeg-bomb"]).size
    assert w * h > BUDGET.max_image_pixels
    assert image(data["jpeg-claims-10000x11000"]).size == (10_000, 11_000) and len(data["jpeg-claims-10000x11000"]) < 1000
    w, h = image(data["jpeg-header-lies"]).size
    assert w * h <= BUDGET.max_image_pixels and len(data["jpeg-header-lies"]) < 1000
    assert image(data["tiff-1000-frames"]).n_frames == 1000
    tiff = image(data["tiff-frames-over-budget"])
    sizes = []
    for i in range(tiff.n_frames):
        tiff.seek(i)
        sizes.append(tiff.size[0] * tiff.size[1])
    assert sizes[0] < 10_000 and max(sizes) <= BUDGET.max_image_pixels < sum(sizes) and sum(sizes) > BUDGET.max_document_pixels
    assert len(pdfium.PdfDocument(data["pdf-500-pages"])) == 500
    bomb = pdfium.PdfDocument(data["pdf-bomb"])
    pixels = [round(w * BUDGET.pdf_dpi / 72) * round(h * BUDGET.pdf_dpi / 72) for w, h in (p.get_size() for p in bomb)]
    assert max(pixels) <= BUDGET.max_image_pixels and sum(pixels) > BUDGET.max_document_pixels
    assert len(data["pdf-bomb"]) < 10_000


def test_pdfs_are_encrypted_or_malformed_as_claimed(data):
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data["pdf-encrypted"])
    assert len(pdfium.PdfDocument(data["pdf-encrypted"], password="user-secret")) == 1
    assert len(pdfium.PdfDocument(data["pdf-owner-password"])) == 1  # opens without a password
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(data["pdf-malformed"])


def test_odd_but_valid_files_are_valid(data):
    assert image(data["gif-animated"]).n_frames == 3
    assert image(data["jpeg-cmyk"]).mode == "CMYK"
    assert image(data["png-16bit"]).mode.startswith("I;16")
    assert image(data["png-transparent"]).mode == "RGBA"
    assert ImageOps.exif_transpose(image(data["jpeg-exif-rotated"])).width > image(data["jpeg-exif-rotated"]).width
    assert image(data["webp"]).format == "WEBP" and image(data["bmp"]).format == "BMP"
    for name in ("polyglot-jpeg-zip", "jpeg-trailing-padding", "jpeg-huge-exif", "jpeg-huge-icc"):
        im = image(data[name])
        im.load()  # decodes fully: the trailing bytes/metadata are allowed by the format
        assert im.format == "JPEG", name
    assert not data["jpeg-trailing-padding"].endswith(b"\xff\xd9") and data["polyglot-jpeg-zip"][-22:-18] == b"PK\x05\x06"
    assert len(image(data["jpeg-huge-icc"]).info["icc_profile"]) == 2 * 1024**2


def test_unsupported_and_truncated_files_are_what_they_claim(data):
    for name in ("text-named-jpg", "heic", "svg", "zip", "empty"):
        with pytest.raises(Exception):
            image(data[name]).load()
    for name in ("jpeg-truncated", "png-truncated"):
        with pytest.raises(OSError):
            image(data[name]).load()

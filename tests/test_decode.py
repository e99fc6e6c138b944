"""Safe decoding: real files made here in every accepted format, and every guard."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.core.errors import DocumentTooLargeError, NotAnImageError, TruncatedImageError
from services.preprocess.decode import Limits, decode_pages, sniff
from tools.render_samples import encode, render_page

PAGE = render_page(["Total 12.50"], size=24)
LIMITS = Limits(max_pixels=10**8)


def dark_text_on_light(page: np.ndarray) -> bool:
    return page.min() < 80 and np.median(page) > 200


@pytest.mark.parametrize("fmt,kind", [("PNG", "png"), ("JPEG", "jpeg"), ("BMP", "bmp"),
                                      ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff")])
def test_formats_decode_to_bgr_pages(fmt, kind):
    data = encode(PAGE, fmt)
    assert sniff(data) == kind
    pages = decode_pages(data, LIMITS)
    assert len(pages) == 1
    assert pages[0].shape == (PAGE.height, PAGE.width, 3) and pages[0].dtype == np.uint8
    assert dark_text_on_light(pages[0])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_modes_become_8bit_bgr(mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(PAGE.convert("L"), np.uint16) * 257)
        data = encode(image, "PNG")
    else:
        data = encode(PAGE.convert(mode), "JPEG" if mode == "CMYK" else "PNG")
    page = decode_pages(data, LIMITS)[0]
    assert page.shape == (PAGE.height, PAGE.width, 3) and page.dtype == np.uint8
    assert dark_text_on_light(page), mode


def test_exif_orientation_is_applied():
    rotated = PAGE.rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with "rotate 90 CW to view" (EXIF 2.3, tag 274 Orientation)
    page = decode_pages(encode(rotated, "JPEG", exif=exif), LIMITS)[0]
    assert page.shape[:2] == (PAGE.height, PAGE.width)


def test_multipage_tiff_gives_every_page_and_is_limited():
    buf = io.BytesIO()
    PAGE.save(buf, "TIFF", save_all=True, append_images=[PAGE.rotate(180), PAGE])
    assert len(decode_pages(buf.getvalue(), LIMITS)) == 3
    with pytest.raises(DocumentTooLargeError, match="3 pages"):
        decode_pages(buf.getvalue(), Limits(max_pixels=10**8, max_pages=2))


def test_pdf_pages_are_rendered_at_the_configured_dpi_and_limited():
    buf = io.BytesIO()
    PAGE.save(buf, "PDF", resolution=72, save_all=True, append_images=[PAGE])
    pages = decode_pages(buf.getvalue(), Limits(max_pixels=10**8, pdf_dpi=144))
    assert len(pages) == 2
    assert pages[0].shape == (PAGE.height * 2, PAGE.width * 2, 3)  # 144 dpi = 2x the 72-dpi page
    assert dark_text_on_light(pages[0])
    with pytest.raises(DocumentTooLargeError, match="2 pages"):
        decode_pages(buf.getvalue(), Limits(max_pixels=10**8, max_pages=1))
    with pytest.raises(DocumentTooLargeError, match="PDF page 1"):
        decode_pages(buf.getvalue(), Limits(max_pixels=1000, pdf_dpi=144))


@pytest.mark.parametrize("data,error", [
    (b"hello, not an image", NotAnImageError),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, NotAnImageError),
    (b"%PDF-1.7\nnot really a pdf", TruncatedImageError),
])
def test_not_an_image(data, error):
    with pytest.raises(error):
        decode_pages(data, LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PDF"])
def test_truncated(fmt):
    data = encode(PAGE, fmt)
    with pytest.raises(TruncatedImageError):
        decode_pages(data[: len(data) // 2], LIMITS)


def test_pixel_bombs_fail_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buf, "PNG")  # 900 Mpx in ~110 KB
    with pytest.raises(DocumentTooLargeError, match="900000000 pixels"):
        decode_pages(buf.getvalue(), Limits())
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 Mpx: under Pillow's guard, over ours
    with pytest.raises(DocumentTooLargeError, match="12000x12000"):
        decode_pages(buf.getvalue(), Limits())

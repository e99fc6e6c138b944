"""Safe decoding: real files made here in every accepted format, and every guard."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.core.errors import DocumentTooLargeError, NotAnImageError, TruncatedImageError
from services.preprocess.decode import decode_pages, sniff
from tools.render_samples import encode, render_page

PAGE = render_page(["Total 12.50"], size=24)


@pytest.mark.parametrize("fmt,kind", [("PNG", "png"), ("JPEG", "jpeg"), ("BMP", "bmp"),
                                      ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff")])
def test_formats_decode_to_bgr_pages(fmt, kind):
    data = encode(PAGE, fmt)
    assert sniff(data) == kind
    pages = decode_pages(data, max_pixels=10**8)
    assert len(pages) == 1
    assert pages[0].shape == (PAGE.height, PAGE.width, 3) and pages[0].dtype == np.uint8
    # the text is dark on a light page in every format
    assert pages[0].min() < 80 and np.median(pages[0]) > 200


def test_multipage_tiff_gives_every_page():
    buf = io.BytesIO()
    PAGE.save(buf, "TIFF", save_all=True, append_images=[PAGE.rotate(180), PAGE])
    assert len(decode_pages(buf.getvalue(), max_pixels=10**8)) == 3


def test_grey_and_alpha_become_bgr():
    for mode in ("L", "RGBA", "I;16"):
        pages = decode_pages(encode(PAGE.convert(mode) if mode != "I;16" else
                                    Image.fromarray((np.asarray(PAGE.convert("L"), np.uint16) * 257)), "PNG"),
                             max_pixels=10**8)
        assert pages[0].shape[2] == 3 and pages[0].dtype == np.uint8


@pytest.mark.parametrize("data,error", [
    (b"hello, not an image", NotAnImageError),
    (b"%PDF-1.7\n...", NotAnImageError),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, NotAnImageError),
])
def test_not_an_image(data, error):
    with pytest.raises(error):
        decode_pages(data, max_pixels=10**8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(fmt):
    data = encode(PAGE, fmt)
    with pytest.raises(TruncatedImageError):
        decode_pages(data[: len(data) // 2], max_pixels=10**8)


def test_pixel_bomb_fails_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buf, "PNG")  # 900 Mpx in ~110 KB
    with pytest.raises(DocumentTooLargeError, match="900000000 pixels"):
        decode_pages(buf.getvalue(), max_pixels=120_000_000)
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 Mpx: under Pillow's guard, over ours
    with pytest.raises(DocumentTooLargeError, match="12000x12000"):
        decode_pages(buf.getvalue(), max_pixels=120_000_000)

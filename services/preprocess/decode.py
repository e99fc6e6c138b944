"""Safe decoding of submitted documents into page images.

The real type is sniffed from the leading bytes (magic numbers), never from the file name.
Dimensions and page counts are read from the header (Pillow, lazily, no pixel data; pypdfium2
for PDF page sizes) and checked against the limits *before* decoding, so decompression bombs,
30000-px images and 5000-page PDFs fail fast. Pixels are decoded with OpenCV
(``cv2.imdecode``/``cv2.imdecodemulti``: EXIF orientation applied, CMYK, palette, grey, alpha and
16-bit converted to 8-bit BGR; GIF gives its first frame); PDF pages are rendered by pypdfium2
at ``pdf_dpi``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pypdfium2 as pdfium
from PIL import Image

from services.core.errors import DocumentTooLargeError, NotAnImageError, TruncatedImageError

# Magic numbers: PNG (RFC 2083 sec. 12.12), JPEG SOI (ITU T.81 B.1.1.2), TIFF 6.0 header,
# BMP "BM", RIFF....WEBP (RFC 9649), GIF87a/89a, PDF "%PDF-".
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"%PDF-", "pdf"),
)


def sniff(data: bytes) -> str | None:
    """Format name of ``data`` from its magic number (``"png"``, ``"jpeg"``...), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


@dataclass(frozen=True)
class Limits:
    """Resource guards of one document: pixels per page, pages, PDF render resolution (dpi)."""

    max_pixels: int = 120_000_000
    max_pages: int = 200
    pdf_dpi: int = 200


def header_info(data: bytes) -> tuple[int, int, int]:
    """``(width, height, frames)`` from the image header; raises NotAnImageError."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.width, im.height, getattr(im, "n_frames", 1)
    except Image.DecompressionBombError as exc:  # Pillow's own guard (> 2x MAX_IMAGE_PIXELS)
        raise DocumentTooLargeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImageError(f"unreadable image header: {exc}") from None


def _check_pixels(width: int, height: int, limits: Limits, what: str = "image") -> None:
    if width * height > limits.max_pixels:
        raise DocumentTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} "
            "(OCRSTREAM_MAX_IMAGE_PIXELS)")


def _check_pages(pages: int, limits: Limits) -> None:
    if pages > limits.max_pages:
        raise DocumentTooLargeError(f"document has {pages} pages; the limit is {limits.max_pages} "
                                    "(OCRSTREAM_MAX_PAGES)")


def decode_pages(data: bytes, limits: Limits = Limits()) -> list[np.ndarray]:
    """Decode ``data`` into pages, each ``(H, W, 3) uint8`` BGR.

    Raises NotAnImageError (not a supported image or PDF), DocumentTooLargeError (over
    ``limits``), TruncatedImageError (data ends early or is corrupt).
    """
    kind = sniff(data)
    if kind is None:
        raise NotAnImageError(f"not an image: unknown leading bytes {data[:8]!r}")
    if kind == "pdf":
        return render_pdf(data, limits)
    width, height, frames = header_info(data)
    _check_pixels(width, height, limits)
    if kind == "tiff":
        _check_pages(frames, limits)
    if kind == "jpeg" and b"\xff\xd9" not in data[-64:]:
        raise TruncatedImageError("JPEG data ends without its end-of-image marker (truncated)")
    buf = np.frombuffer(data, np.uint8)
    if kind == "tiff":
        ok, pages = cv2.imdecodemulti(buf, cv2.IMREAD_COLOR)
        pages = list(pages) if ok else []
    else:
        page = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        pages = [] if page is None else [page]
    if not pages:
        raise TruncatedImageError(f"{kind} data could not be decoded (truncated or corrupt)")
    return pages


def render_pdf(data: bytes, limits: Limits) -> list[np.ndarray]:
    """Every page of a PDF rendered at ``limits.pdf_dpi`` as ``(H, W, 3) uint8`` BGR."""
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise TruncatedImageError(f"PDF could not be opened: {exc}") from None
    try:
        _check_pages(len(pdf), limits)
        scale = limits.pdf_dpi / 72.0  # PDF user space is 1/72 inch (ISO 32000-1, 8.3.2.3)
        pages = []
        for n in range(len(pdf)):
            page = pdf[n]
            w_pt, h_pt = page.get_size()
            _check_pixels(round(w_pt * scale), round(h_pt * scale), limits, f"PDF page {n + 1}")
            bitmap = page.render(scale=scale)  # BGR(x) byte order by default
            pages.append(np.ascontiguousarray(bitmap.to_numpy()[:, :, :3]))
        return pages
    finally:
        pdf.close()

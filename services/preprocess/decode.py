"""Safe decoding of submitted documents into page images.

The real type is sniffed from the leading bytes (magic numbers), never from the file name.
Dimensions are read from the header (Pillow, lazily, no pixel data) and checked against the
pixel limit *before* decoding, so decompression bombs fail fast. Pixels are decoded with OpenCV
(``cv2.imdecode``/``cv2.imdecodemulti``) into 8-bit BGR.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
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


def header_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from the image header; raises NotAnImageError."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Image.DecompressionBombError as exc:  # Pillow's own guard (> 2x MAX_IMAGE_PIXELS)
        raise DocumentTooLargeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImageError(f"unreadable image header: {exc}") from None


def decode_pages(data: bytes, *, max_pixels: int) -> list[np.ndarray]:
    """Decode ``data`` into pages, each ``(H, W, 3) uint8`` BGR.

    Raises NotAnImageError (not a supported image), DocumentTooLargeError (more than
    ``max_pixels`` pixels per page), TruncatedImageError (data ends early or is corrupt).
    """
    kind = sniff(data)
    if kind is None:
        raise NotAnImageError(f"not an image: unknown leading bytes {data[:8]!r}")
    if kind == "pdf":
        raise NotAnImageError("PDF documents are not supported yet")
    width, height = header_size(data)
    if width * height > max_pixels:
        raise DocumentTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "(OCRSTREAM_MAX_IMAGE_PIXELS)")
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

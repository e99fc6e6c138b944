"""Document formats by their leading bytes (magic numbers), never by file name.

Used by the ingest doors to refuse unsupported types (HTTP 415) before anything is stored, and
by preprocess to pick the decoder.
"""

from __future__ import annotations

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

#: Formats the pipeline decodes.
SUPPORTED = ("png", "jpeg", "tiff", "bmp", "gif", "webp", "pdf")
#: Bytes needed by :func:`sniff`.
SNIFF_BYTES = 16


def sniff(data: bytes) -> str | None:
    """Format name of ``data`` from its magic number (``"png"``, ``"jpeg"``...), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)

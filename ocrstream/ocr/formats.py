"""What a document's bytes are, from their leading bytes (magic numbers), never from a file name.

Shared by the ingest doors (refuse an unsupported type with 415 before anything is stored) and
preprocess (decode only what was sniffed). :func:`sniff` names the supported formats;
:func:`identify` also names common formats the pipeline does NOT decode, so that errors can say
what was submitted ("HEIC is not supported") instead of quoting bytes.

Signatures: PNG (RFC 2083 sec. 12.12), JPEG SOI + first marker (ITU T.81 B.1.1.2), TIFF 6.0
header (II*\\0 / MM\\0*), BMP "BM", GIF87a/89a, RIFF....WEBP (RFC 9649), PDF "%PDF-"
(ISO 32000-1 7.5.2; readers accept it within the first 1024 bytes, we require it first);
unsupported: ISO-BMFF ``ftyp`` brands for HEIF/HEIC/AVIF (ISO/IEC 23008-12, AV1 Image File
Format), JPEG 2000 (ISO/IEC 15444-1 I.5.1), JPEG XL (ISO/IEC 18181-2), ZIP local/end headers
(PKWARE APPNOTE 4.3), gzip (RFC 1952), SVG/XML/HTML text, PostScript "%!PS", Photoshop "8BPS".
"""

from __future__ import annotations

__all__ = ["MEDIA_TYPES", "SUPPORTED", "identify", "is_supported", "sniff"]

#: supported format name -> media type (IANA), in the order they are tried.
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "gif": "image/gif",
    "webp": "image/webp",
    "pdf": "application/pdf",
}
SUPPORTED = frozenset(MEDIA_TYPES)

_SUPPORTED_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"%PDF-", "pdf"),
)
_UNSUPPORTED_MAGIC = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jpegxl"),
    (b"\xff\x0a", "jpegxl"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"%!PS", "postscript"),
    (b"8BPS", "psd"),
)
#: ISO-BMFF major/compatible brands -> format (HEIF family, AVIF); others are "iso-bmff".
_BMFF_BRANDS = {b"avif": "avif", b"avis": "avif", b"heic": "heic", b"heix": "heic", b"hevc": "heic",
                b"hevx": "heic", b"heim": "heic", b"heis": "heic", b"mif1": "heif", b"msf1": "heif"}


def sniff(data: bytes) -> str | None:
    """The supported format of ``data`` (a key of :data:`MEDIA_TYPES`), or None.

    Only the leading bytes are read; a supported signature does not mean the rest is valid
    (that is the decoder's job).
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in _SUPPORTED_MAGIC if data.startswith(magic)), None)


def is_supported(data: bytes) -> bool:
    """True when :func:`sniff` recognises ``data`` as a format the pipeline decodes."""
    return sniff(data) is not None


def identify(data: bytes) -> str:
    """Best name for what ``data`` is: a supported format, a known unsupported one, or a guess.

    Returns one of :data:`SUPPORTED`, or ``"empty"``, ``"heic"``, ``"heif"``, ``"avif"``,
    ``"iso-bmff"``, ``"jpeg2000"``, ``"jpegxl"``, ``"zip"``, ``"gzip"``, ``"postscript"``,
    ``"psd"``, ``"svg"``, ``"xml"``, ``"html"``, ``"text"`` (printable UTF-8) or ``"unknown"``.
    """
    if not data:
        return "empty"
    kind = sniff(data)
    if kind:
        return kind
    if data[4:8] == b"ftyp":
        brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(len(data), 64), 4)]
        return next((_BMFF_BRANDS[b] for b in brands if b in _BMFF_BRANDS), "iso-bmff")
    kind = next((name for magic, name in _UNSUPPORTED_MAGIC if data.startswith(magic)), None)
    if kind:
        return kind
    return _text_kind(data[:4096])


def _text_kind(head: bytes) -> str:
    """``"svg"``, ``"xml"``, ``"html"``, ``"text"`` or ``"unknown"`` for the first bytes."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        try:  # the head may end inside a multi-byte character
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
    start = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in start[:2048] and start.startswith(("<?xml", "<svg", "<!doctype svg", "<!--")):
        return "svg"
    if start.startswith(("<!doctype html", "<html")):
        return "html"
    if start.startswith("<?xml"):
        return "xml"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return "text" if text and printable >= 0.95 * len(text) else "unknown"

"""Safe decoding of untrusted documents: the whole budget checked from headers, then one page at a time.

:func:`open_document` sniffs the real type from the leading bytes (:mod:`ocrstream.ocr.formats`,
never the file name), checks the file's structure and reads every page's (or frame's) size from
the headers without decoding any pixel, and checks the document :class:`Budget` (pages, pixels
per page, pixels over all pages) before a single page is decoded. :meth:`OpenedDocument.pages` then
decodes one page at a time (a generator: never every page in memory). Run it where a bomb cannot
hurt (the preprocess stage runs it in :mod:`services.preprocess.worker`).

Accepted is what the format allows; refused is what cannot be a page:

* JPEG: markers walked from SOI to the first SOS (ITU T.81 B.2, B.1.1.2 fill bytes), the frame
  header (SOF) read there, and an EOI looked for after the scan data. Bytes after the EOI
  (padding, an appended ZIP, a second MPF picture) are allowed; no EOI after the scan ->
  :class:`TruncatedImageError`. A Huffman-coded JPEG spends at least one bit on the DC
  difference of every 8x8 block (T.81 F.1.2.1: a Huffman code is >= 1 bit), so its scan data
  holds at least blocks / 8 bytes; a header that claims more (681 bytes "of" 10000x11000 px)
  -> :class:`CorruptImageError`. Arithmetic-coded JPEGs (SOF9-15) can code a block in less than
  a bit and are only budget-checked.
* PNG: chunks walked to IEND (PNG spec 5.3); the file ending first -> truncated; a first chunk
  that is not IHDR -> corrupt; IDAT bytes fewer than the raw scanlines / 1032 (deflate's
  largest expansion, RFC 1951: a 258-byte match costs >= 2 bits) -> corrupt.
* TIFF: every frame's IFD read (Pillow, lazily) up to ``max_pages + 1`` frames; a strip or tile
  beyond the end of the file -> truncated. Frame ``k`` is decoded alone
  (``cv2.imdecodemulti`` with a page range).
* WebP: the RIFF size field says how long the file must be (RFC 9649 2.4) -> truncated.
* GIF, WebP and APNG (``acTL`` chunk) with more than one frame: **every frame is a page**, the
  same rule as a multi-frame TIFF (the frame policy, shared by the exporter,
  :func:`ocrstream.ocr.exports.to_searchable_pdf`). Each frame is the composited canvas Pillow
  gives after ``seek(k)`` (disposal and blending applied, at the logical screen / canvas size),
  transparent pixels on white paper. Frames count against ``max_pages`` and every frame's
  pixels against the budget, from the headers. A one-frame GIF/WebP/PNG and a BMP are one page
  (OpenCV). A blank first frame thus never hides the text of the others.
* PDF (pypdfium2): every page's size (``FPDF_GetPageSizeByIndexF``, no page loaded) at
  ``pdf_dpi`` checked before any page is rendered. A password -> :class:`EncryptedDocumentError`;
  a file PDFium cannot parse -> :class:`TruncatedImageError` when it lacks its ``%%EOF``
  trailer (ISO 32000-1 7.5.5) but has objects, else :class:`CorruptImageError`. Page boxes are
  normalised as viewers do (pdf.js ``Page.view``): PDFium already orders a box's corners and
  takes a box without area as US Letter; a crop box that does not meet the media box (an
  empty visible region, ISO 32000-1 14.11.2: the crop box is clipped to the media box) is
  replaced by the media box, so that page is rendered and its text layer read instead of
  being a 0x0 page.
* anything else (HEIC, AVIF, SVG, ZIP, text...) -> :class:`NotAnImageError` naming the format.

Pixels are decoded with OpenCV (EXIF orientation applied; CMYK, palette, grey, alpha and 16-bit
become 8-bit BGR) and PDF pages rendered by PDFium, always as ``(H, W, 3) uint8`` BGR.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pypdfium2 as pdfium
from PIL import Image, TiffImagePlugin

from ocrstream.errors import (
    CorruptImageError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    NotAnImageError,
    TruncatedImageError,
)
from ocrstream.ocr.formats import MEDIA_TYPES, identify, sniff
from ocrstream.ocr.pdftext import TextLayer, read_text_layer

__all__ = ["Budget", "OpenedDocument", "decode_pages", "open_document"]

#: deflate's largest expansion (RFC 1951: a length-258 match coded in 1 + 1 bits).
DEFLATE_MAX_RATIO = 1032
#: PDF user space unit, inches (ISO 32000-1 8.3.2.3).
PDF_POINTS_PER_INCH = 72.0
#: a PDF whose parse failed is called truncated when %%EOF is missing from its last bytes
#: (ISO 32000-1 7.5.5: readers look for it in the last 1024 bytes).
PDF_EOF_WINDOW = 1024


@dataclass(frozen=True)
class Budget:
    """What one document may cost, checked from headers before any pixel is decoded.

    Attributes:
        max_page_pixels: pixels of one page or frame (width x height).
        max_document_pixels: pixels summed over every page and frame.
        max_pages: pages (PDF) or frames (TIFF).
        pdf_dpi: PDF render resolution (dots per inch); page sizes are checked at it.
    """

    max_page_pixels: int = 80_000_000
    max_document_pixels: int = 800_000_000
    max_pages: int = 200
    pdf_dpi: int = 200

    @classmethod
    def from_settings(cls, settings: Any) -> Budget:  # Settings (not imported: no pydantic_settings here)
        """The budget of :class:`ocrstream.settings.Settings` (``OCRSTREAM_MAX_*``, ``PDF_DPI``)."""
        return cls(settings.max_image_pixels, settings.max_document_pixels, settings.max_pages,
                   settings.pdf_dpi)

    def check_page_count(self, pages: int) -> None:
        """Raise DocumentTooLargeError when ``pages`` is over ``max_pages``."""
        if pages > self.max_pages:
            raise DocumentTooLargeError(f"document has {pages} pages; the limit is {self.max_pages} "
                                        "(OCRSTREAM_MAX_PAGES)")

    def admit_page(self, width: int, height: int, total: int, label: str = "image") -> int:
        """Check one page of ``width x height`` px (``label`` names it in errors); returns the new
        pixel total of the document, ``total`` being the pages before it.

        Raises:
            CorruptImageError: the page has no area.
            DocumentTooLargeError: the page, or the total with it, is over budget.
        """
        if width < 1 or height < 1:
            raise CorruptImageError(f"{label} is {width}x{height} px: it has no area")
        pixels = width * height
        if pixels > self.max_page_pixels:
            raise DocumentTooLargeError(
                f"{label} is {width}x{height} = {pixels} pixels; the limit is {self.max_page_pixels} "
                "per page (OCRSTREAM_MAX_IMAGE_PIXELS)")
        total += pixels
        if total > self.max_document_pixels:
            raise DocumentTooLargeError(
                f"the document holds {total} pixels up to {label}; the limit is "
                f"{self.max_document_pixels} per document (OCRSTREAM_MAX_DOCUMENT_PIXELS)")
        return total


class OpenedDocument:
    """An opened document: its kind and every page's size (headers only, within the budget).

    ``page(i)`` decodes page ``i`` as ``(H, W, 3) uint8`` BGR; ``pages()`` yields them one at a
    time. Close it (or use ``with``) to free the decoder's handles. This is the one definition
    of what the pages of a document are: the pipeline reads them and the searchable-PDF export
    (:mod:`ocrstream.ocr.exports`) builds its pages from them.

    Attributes:
        kind: the sniffed format (a key of :data:`ocrstream.ocr.formats.MEDIA_TYPES`).
        page_sizes: ``(width, height)`` px of each page as the headers give them (a JPEG's EXIF
            orientation may swap them in the decoded page).
        animated: the pages are the frames of an animated GIF, WebP or APNG (module docstring).
    """

    animated = False

    def __init__(self, kind: str, page_sizes: Sequence[tuple[int, int]], normalised: Sequence[int] = ()):
        self.kind = kind
        self.page_sizes = list(page_sizes)
        #: indexes of the PDF pages whose crop box the decoder replaced (module docstring)
        self.normalised = tuple(normalised)

    def __len__(self) -> int:
        return len(self.page_sizes)

    def __enter__(self) -> OpenedDocument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def page(self, index: int) -> np.ndarray:
        """Decode page ``index`` (0-based); raises CorruptImageError when it cannot be decoded."""
        if not 0 <= index < len(self):
            raise IndexError(f"page {index} of a {len(self)}-page document")
        try:
            page = self._decode(index)
        except cv2.error as exc:
            if exc.code == cv2.Error.StsNoMem:  # an allocation failed: memory, not the data
                raise MemoryError(str(exc)) from None
            raise CorruptImageError(f"{self.kind} page {index + 1} could not be decoded: {exc}") from None
        if page is None or page.size == 0:
            raise CorruptImageError(f"{self.kind} page {index + 1} could not be decoded (corrupt data)")
        return page

    def pages(self) -> Iterator[np.ndarray]:
        """Every page in order, decoded one at a time."""
        for index in range(len(self)):
            yield self.page(index)

    def text_layer(self, index: int, max_chars: int) -> TextLayer | None:
        """Page ``index``'s text layer (:func:`ocrstream.ocr.pdftext.read_text_layer`, boxes in the
        page's displayed pixels at the render dpi); None for images (no text layer)."""
        return None

    def close(self) -> None:
        """Release the decoder's resources (the PDF handle)."""

    def as_pdf(self) -> bytes | None:
        """A PDF of the pages as this decoder sees them, with a flat page tree (PDFium imports
        every page into a new document); None when the document is not a PDF. For writers whose
        PDF parser disagrees with PDFium on the page count (a deeply nested page tree).

        Raises:
            CorruptImageError: PDFium cannot import a page.
        """
        return None

    def _decode(self, index: int) -> np.ndarray | None:
        raise NotImplementedError


class _ImageDocument(OpenedDocument):
    """PNG, JPEG, BMP, GIF (first frame), WebP: one page, decoded by OpenCV."""

    def __init__(self, kind: str, data: bytes, size: tuple[int, int]):
        super().__init__(kind, [size])
        self._data = data

    def _decode(self, index: int) -> np.ndarray | None:
        buf = np.frombuffer(self._data, np.uint8)
        page = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if page is None or self.kind not in ("png", "webp"):
            return page
        raw = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # only to read an alpha channel, if any
        if raw is None or raw.ndim != 3 or raw.shape[2] != 4 or raw.shape[:2] != page.shape[:2]:
            return page
        return on_white(page, raw[:, :, 3])


def on_white(page: np.ndarray, alpha: np.ndarray, rows: int = 512) -> np.ndarray:
    """``page`` ``(H, W, 3)`` uint8 composited over white paper by ``alpha`` ``(H, W)`` (uint8 or
    uint16): Porter-Duff "over" (Porter & Duff, Compositing Digital Images, 1984). OpenCV's
    colour decoding drops alpha, which turns transparent backgrounds black and hides black text.
    Done in blocks of ``rows`` rows so the float work stays small; returns a new array.
    """
    scale = 65535.0 if alpha.dtype == np.uint16 else 255.0
    out = np.empty_like(page)
    for top in range(0, page.shape[0], rows):
        a = alpha[top:top + rows].astype(np.float32)[..., None] / scale
        block = page[top:top + rows].astype(np.float32)
        out[top:top + rows] = np.clip(block * a + 255.0 * (1.0 - a), 0, 255).astype(np.uint8)
    return out


class _AnimatedDocument(OpenedDocument):
    """GIF, WebP, APNG with several frames: frame ``k`` is page ``k`` (Pillow ``seek``, composited
    onto white). One Pillow image stays open, so reading frames in order decodes each once."""

    animated = True

    def __init__(self, kind: str, image: Image.Image, frames: int):
        super().__init__(kind, [image.size] * frames)
        self._image = image

    def _decode(self, index: int) -> np.ndarray | None:
        try:
            self._image.seek(index)
            rgba = np.asarray(self._image.convert("RGBA"))
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise CorruptImageError(f"{self.kind} frame {index + 1} could not be decoded: {exc}") from None
        bgr = np.ascontiguousarray(rgba[:, :, 2::-1])
        return on_white(bgr, rgba[:, :, 3]) if (rgba[:, :, 3] < 255).any() else bgr

    def close(self) -> None:
        self._image.close()


class _TiffDocument(OpenedDocument):
    """TIFF: frame ``k`` decoded alone by OpenCV."""

    def __init__(self, data: bytes, sizes: Sequence[tuple[int, int]]):
        super().__init__("tiff", sizes)
        self._data = data

    def _decode(self, index: int) -> np.ndarray | None:
        ok, frames = cv2.imdecodemulti(np.frombuffer(self._data, np.uint8), cv2.IMREAD_COLOR, None,
                                       (index, index + 1))
        return frames[0] if ok and frames else None


class _PdfDocument(OpenedDocument):
    """PDF: page ``k`` rendered by PDFium at the budget's dpi."""

    def __init__(self, pdf: pdfium.PdfDocument, sizes: Sequence[tuple[int, int]], scale: float,
                 normalised: Sequence[int] = ()):
        super().__init__("pdf", sizes, normalised)
        self._pdf, self._scale = pdf, scale

    def _decode(self, index: int) -> np.ndarray | None:
        try:
            page = self._pdf[index]
        except pdfium.PdfiumError as exc:
            raise CorruptImageError(f"PDF page {index + 1} could not be loaded: {exc}") from None
        try:
            bitmap = page.render(scale=self._scale, limit_image_cache=True)  # BGR byte order
            try:
                return np.ascontiguousarray(bitmap.to_numpy()[:, :, :3])
            finally:
                bitmap.close()
        finally:
            page.close()

    def text_layer(self, index: int, max_chars: int) -> TextLayer | None:
        """Page ``index``'s text layer, at most ``max_chars`` characters read (see the base class).

        Raises:
            CorruptImageError: the page cannot be loaded or its text page built.
        """
        try:
            page = self._pdf[index]
        except pdfium.PdfiumError as exc:
            raise CorruptImageError(f"PDF page {index + 1} could not be loaded: {exc}") from None
        try:
            return read_text_layer(page, self._scale, max_chars)
        except pdfium.PdfiumError as exc:
            raise CorruptImageError(f"PDF page {index + 1}'s text could not be read: {exc}") from None
        finally:
            page.close()

    def close(self) -> None:
        self._pdf.close()

    def as_pdf(self) -> bytes:
        new = pdfium.PdfDocument.new()
        try:
            new.import_pages(self._pdf)
            out = io.BytesIO()
            new.save(out)
        except pdfium.PdfiumError as exc:
            raise CorruptImageError(f"PDF pages could not be copied: {exc}") from None
        finally:
            new.close()
        return out.getvalue()


def open_document(data: bytes, budget: Budget = Budget()) -> OpenedDocument:
    """Open ``data`` and check it: sniffed type, structure, every page's size against ``budget``.

    No pixel is decoded here. Raises EmptyDocumentError (0 bytes), NotAnImageError (not a
    supported format; the message names what it is), TruncatedImageError, CorruptImageError,
    EncryptedDocumentError, DocumentTooLargeError (over ``budget``).
    """
    if not data:
        raise EmptyDocumentError("the document has 0 bytes")
    kind = sniff(data)
    if kind is None:
        found = identify(data)
        supported = ", ".join(MEDIA_TYPES).upper()
        raise NotAnImageError(f"not a supported image or PDF (looks like: {found}, leading bytes "
                              f"{data[:8]!r}); supported: {supported}")
    if kind == "pdf":
        return _open_pdf(data, budget)
    if kind == "tiff":
        return _TiffDocument(data, _tiff_sizes(data, budget))
    if kind == "webp":
        _check_webp_length(data)
    if kind in ("gif", "webp") or kind == "png" and _png_animated(data, _png_size(data)):
        return _open_frames(kind, data, budget)
    size = {"jpeg": _jpeg_size, "png": _png_size}.get(kind, _pillow_size)(data)
    budget.admit_page(*size, total=0, label="image")
    return _ImageDocument(kind, data, size)


def decode_pages(data: bytes, budget: Budget = Budget()) -> Iterator[np.ndarray]:
    """Pages of ``data`` one at a time, ``(H, W, 3) uint8`` BGR (:func:`open_document` + ``pages``).

    The whole budget is checked before the first page is yielded; errors as :func:`open_document`.
    """
    with open_document(data, budget) as document:
        yield from document.pages()


# -- JPEG ------------------------------------------------------------------------------------
_SOF_HUFFMAN = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7))
_SOF_ARITHMETIC = frozenset((0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7: no length field (T.81 B.1.1.4)
_SOS, _EOI = 0xDA, 0xD9


@dataclass(frozen=True)
class _JpegFrame:
    width: int
    height: int
    huffman: bool
    sampling: tuple[tuple[int, int], ...]  # (H, V) per component

    def max_component_blocks(self) -> int:
        """8x8 blocks of the largest component (T.81 A.1.1: component size from the sampling)."""
        h_max = max(h for h, _ in self.sampling)
        v_max = max(v for _, v in self.sampling)
        return max(math.ceil(math.ceil(self.width * h / h_max) / 8) * math.ceil(math.ceil(self.height * v / v_max) / 8)
                   for h, v in self.sampling)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a JPEG whose structure is sound (see the module docstring)."""
    frame, scan_start = _jpeg_first_scan(data)
    eoi = data.find(b"\xff\xd9", scan_start)  # 0xFF in scan data is stuffed (FF00) or RSTn: T.81 B.1.1.5
    if eoi < 0:
        raise TruncatedImageError("JPEG data ends without its end-of-image marker (truncated)")
    blocks = frame.max_component_blocks()
    if frame.huffman and (eoi - scan_start) * 8 < blocks:
        raise CorruptImageError(
            f"JPEG header claims {frame.width}x{frame.height} px ({blocks} 8x8 blocks) but the file holds only "
            f"{eoi - scan_start} bytes of scan data; every block needs at least one bit (ITU T.81 F.1.2.1): "
            "the header lies about the image size")
    return frame.width, frame.height


def _jpeg_first_scan(data: bytes) -> tuple[_JpegFrame, int]:
    """Walk the marker segments after SOI; returns the frame header and where scan data starts."""
    pos, frame = 2, None
    while True:
        if pos >= len(data):
            raise TruncatedImageError("JPEG data ends before its first scan (truncated)")
        if data[pos] != 0xFF:
            raise CorruptImageError(f"JPEG marker expected at byte {pos}, found 0x{data[pos]:02x}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes (T.81 B.1.1.2)
            pos += 1
        if pos >= len(data):
            raise TruncatedImageError("JPEG data ends inside a marker (truncated)")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0x00, 0xD8, _EOI):
            raise CorruptImageError(f"JPEG marker 0x{marker:02x} before the first scan at byte {pos - 1}")
        if pos + 2 > len(data):
            raise TruncatedImageError("JPEG data ends inside a marker (truncated)")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise CorruptImageError(f"JPEG marker 0x{marker:02x} has a length of {length}")
        if pos + length > len(data):
            raise TruncatedImageError("JPEG data ends inside a marker segment (truncated)")
        if marker in _SOF_HUFFMAN or marker in _SOF_ARITHMETIC:
            frame = _jpeg_frame(marker, data[pos + 2:pos + length])
        elif marker == _SOS:
            if frame is None:
                raise CorruptImageError("JPEG scan starts before any frame header (SOF)")
            return frame, pos + length
        pos += length


def _jpeg_frame(marker: int, segment: bytes) -> _JpegFrame:
    """Frame header (T.81 B.2.2): P, Y, X, Nf, then (C, H|V, Tq) per component."""
    if len(segment) < 6 or len(segment) < 6 + 3 * segment[5] or segment[5] == 0:
        raise CorruptImageError("JPEG frame header (SOF) is too short")
    height, width = struct.unpack(">HH", segment[1:5])
    if height == 0:
        raise CorruptImageError("JPEG height is 0 (defined by a DNL marker, which is not supported)")
    if width == 0:
        raise CorruptImageError("JPEG width is 0")
    sampling = tuple((segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(segment[5]))
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in sampling):
        raise CorruptImageError(f"JPEG sampling factors {sampling} are outside 1..4")
    return _JpegFrame(width, height, marker in _SOF_HUFFMAN, sampling)


# -- PNG -------------------------------------------------------------------------------------
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (PNG spec 11.2.2)


def _png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of a PNG whose chunks reach IEND and whose IDAT can hold its pixels."""
    pos, header, idat = 8, None, 0
    while True:
        if pos + 12 > len(data):
            raise TruncatedImageError("PNG data ends before its IEND chunk (truncated)")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if header is None and ctype != b"IHDR":
            raise CorruptImageError(f"PNG's first chunk is {ctype!r}, not IHDR")
        if pos + 12 + length > len(data):
            raise TruncatedImageError(f"PNG data ends inside its {ctype.decode('latin-1')} chunk (truncated)")
        if ctype == b"IHDR":
            if length < 13:
                raise CorruptImageError("PNG IHDR chunk is too short")
            header = struct.unpack(">IIBB", data[pos + 8:pos + 18])
        elif ctype == b"IDAT":
            idat += length
        elif ctype == b"IEND":
            break
        pos += 12 + length
    assert header is not None  # the first chunk was IHDR (checked above)
    width, height, depth, colour = header
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise CorruptImageError(f"PNG colour type {colour} / bit depth {depth} is not valid")
    raw = height * (1 + math.ceil(width * _PNG_CHANNELS[colour] * depth / 8))  # a filter byte per row
    if idat * DEFLATE_MAX_RATIO < raw:
        raise CorruptImageError(
            f"PNG header claims {width}x{height} px ({raw} bytes of scanlines) but its image data is "
            f"{idat} bytes; deflate expands at most {DEFLATE_MAX_RATIO}:1 (RFC 1951): the header lies")
    return width, height


def _png_animated(data: bytes, size: tuple[int, int]) -> bool:
    """True when the PNG is an APNG of more than one frame (its ``acTL`` chunk, APNG spec 1.0,
    before the first IDAT); ``size`` is :func:`_png_size`'s answer (the chunks are sound)."""
    pos = 8
    while pos + 12 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        if ctype == b"acTL" and length >= 8:
            return int.from_bytes(data[pos + 8:pos + 12], "big") > 1
        if ctype in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length
    return False


# -- WebP, BMP, GIF (Pillow headers) ---------------------------------------------------------
def _check_webp_length(data: bytes) -> None:
    riff_size = int.from_bytes(data[4:8], "little")
    if len(data) < 8 + riff_size:
        raise TruncatedImageError(f"WebP data is {len(data)} bytes, its RIFF header says {8 + riff_size} (truncated)")


def _open_frames(kind: str, data: bytes, budget: Budget) -> OpenedDocument:
    """A GIF, WebP or PNG: one page (OpenCV) if it has one frame, else every frame a page
    (:class:`_AnimatedDocument`), the frame count and each frame's pixels checked first."""
    image = _pillow(data)
    try:
        frames = getattr(image, "n_frames", 1)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        image.close()
        raise CorruptImageError(f"{kind} frames are unreadable: {exc}") from None
    if frames <= 1:
        image.close()
        size = image.size
        budget.admit_page(*size, total=0, label="image")
        return _ImageDocument(kind, data, size)
    try:
        if frames > budget.max_pages:
            raise DocumentTooLargeError(f"{kind} has {frames} frames; the limit is {budget.max_pages} pages "
                                        "(OCRSTREAM_MAX_PAGES; every frame of an animated image is a page)")
        total = 0
        for index in range(frames):
            total = budget.admit_page(*image.size, total=total, label=f"{kind} frame {index + 1}")
    except BaseException:
        image.close()
        raise
    return _AnimatedDocument(kind, image, frames)


def _pillow_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header (Pillow reads no pixel data here)."""
    with _pillow(data) as image:
        return image.size


def _pillow(data: bytes) -> Image.Image:
    """Lazily opened image; Pillow's errors as ours (its bomb guard -> DocumentTooLargeError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our budget decides
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DocumentTooLargeError(f"image too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise CorruptImageError(f"unreadable {sniff(data)} header: {exc}") from None


# -- TIFF ------------------------------------------------------------------------------------
_STRIP_TAGS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)


def _tiff_sizes(data: bytes, budget: Budget) -> list[tuple[int, int]]:
    """Every frame's ``(width, height)`` from its IFD, the budget checked frame by frame."""
    sizes: list[tuple[int, int]] = []
    total = 0
    with _pillow(data) as image:
        assert isinstance(image, TiffImagePlugin.TiffImageFile)  # sniffed as TIFF: only this plugin takes its magic
        while True:
            try:
                image.seek(len(sizes))
            except EOFError:
                break
            except (OSError, SyntaxError, ValueError, struct.error) as exc:
                raise CorruptImageError(f"TIFF frame {len(sizes) + 1} is unreadable: {exc}") from None
            if len(sizes) == budget.max_pages:
                raise DocumentTooLargeError(f"TIFF has more than {budget.max_pages} frames; the limit is "
                                            f"{budget.max_pages} pages (OCRSTREAM_MAX_PAGES)")
            _check_tiff_strips(image, data, len(sizes))
            total = budget.admit_page(*image.size, total=total, label=f"TIFF frame {len(sizes) + 1}")
            sizes.append(image.size)
    return sizes


def _check_tiff_strips(image: TiffImagePlugin.TiffImageFile, data: bytes, index: int) -> None:
    for offsets_tag, counts_tag in _STRIP_TAGS:
        offsets, counts = image.tag_v2.get(offsets_tag), image.tag_v2.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        if any(o + c > len(data) for o, c in zip(offsets, counts)):
            raise TruncatedImageError(f"TIFF frame {index + 1}'s image data lies beyond the end of the file (truncated)")


# -- PDF -------------------------------------------------------------------------------------
def _open_pdf(data: bytes, budget: Budget) -> _PdfDocument:
    """Open with PDFium and check every page's size at ``pdf_dpi`` (no page is loaded)."""
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise _pdf_open_error(exc, data) from None
    try:
        pages = len(pdf)
        if pages == 0:
            raise CorruptImageError("PDF has no pages")
        budget.check_page_count(pages)
        scale = budget.pdf_dpi / PDF_POINTS_PER_INCH
        sizes, total, normalised = [], 0, []
        for index in range(pages):
            w_pt, h_pt = pdf.get_page_size(index)
            if w_pt <= 0 or h_pt <= 0:
                w_pt, h_pt = _visible_media_box(pdf, index)
                normalised.append(index)
            # pypdfium2 renders ceil(points * scale) px per side
            size = (math.ceil(w_pt * scale), math.ceil(h_pt * scale))
            total = budget.admit_page(*size, total=total, label=f"PDF page {index + 1} at {budget.pdf_dpi} dpi")
            sizes.append(size)
    except pdfium.PdfiumError as exc:
        pdf.close()
        raise CorruptImageError(f"PDF page sizes are unreadable: {exc}") from None
    except BaseException:
        pdf.close()
        raise
    return _PdfDocument(pdf, sizes, scale, normalised)


def _visible_media_box(pdf: pdfium.PdfDocument, index: int) -> tuple[float, float]:
    """Page ``index`` has no visible area (its crop box misses its media box): its crop box
    becomes its media box, corners ordered (in the open document only); returns the new size, pt."""
    page = pdf[index]
    try:
        x0, y0, x1, y1 = page.get_mediabox()
        page.set_cropbox(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    finally:
        page.close()
    width, height = pdf.get_page_size(index)
    return float(width), float(height)


def _pdf_open_error(exc: pdfium.PdfiumError, data: bytes) -> Exception:
    code = getattr(exc, "err_code", None)
    if code == pdfium.raw.FPDF_ERR_PASSWORD:
        return EncryptedDocumentError("PDF is encrypted and needs a password to open; submit it unprotected")
    if code == pdfium.raw.FPDF_ERR_SECURITY:
        return EncryptedDocumentError("PDF uses an unsupported security (encryption) handler")
    if b"%%EOF" not in data[-PDF_EOF_WINDOW:] and b" obj" in data:
        return TruncatedImageError(f"PDF ends without its %%EOF trailer and could not be opened (truncated): {exc}")
    return CorruptImageError(f"PDF could not be parsed: {exc}")

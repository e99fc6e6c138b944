"""PDF text layers, page by page: read a born-digital page from the PDF itself, OCR the rest.

OCRmyPDF's per-page rule (``--skip-text`` / ``--redo-ocr``), decided per page by
:func:`decide` from what :func:`read_text_layer` finds with PDFium (pypdfium2):

* mode ``ocr``: every page is OCRed (the text layer is not read);
* mode ``text``: a page with any text layer within the bound is read from it, even an
  invisible one (trust an earlier OCR pass);
* mode ``auto`` (default): a page is read from its text layer when that text is drawn visibly
  (render modes other than 3 "invisible" and 7 "clip only", ISO 32000-1 9.3.6), is not garbage
  and the page is not mostly images; otherwise it is OCRed. So an earlier invisible OCR layer
  (render mode 3 over a scan: OCRmyPDF, Tesseract, scanners' "searchable PDF") is replaced by
  our own reading, and a page of visible text over large images (a scan with a caption, a
  photo of a receipt pasted into a letter) is OCRed whole: the OCR reads the images' text and
  the printed text alike, where the text layer would miss the images' text.

Garbage: a character without a usable Unicode value (PDFium's ``FPDFText_HasUnicodeMapError``:
a font without a ``ToUnicode`` map; U+0000, U+FFFD replacement, C0/C1 controls, private-use
code points) or a box far outside the page; more than :data:`GARBAGE_FRACTION` of a page's
characters being garbage makes the layer count as no text.

Bound: a page's text layer is read only when PDFium counts at most ``max_chars`` characters on
it (:data:`MAX_PAGE_CHARS` by default, ``OCRSTREAM_PDF_MAX_PAGE_CHARS``); a larger one is not
read and the page is OCRed (reason ``text-too-large``).

Geometry: characters' boxes come in PDF user space (points, y up, unrotated page); they are
mapped to the displayed page's pixels at the render scale (the page as PDFium renders it: its
effective crop box, ``FPDF_GetPageBoundingBox``, inherited boxes too; ``/Rotate`` applied
clockwise, ISO 32000-1 7.7.3.3), the space of every box in ocrstream. Characters are grouped
into words (split at spaces) and lines (split at PDFium's generated line breaks), one region per
line, confidence 1.0; lines are put in reading order in the text's own writing direction (a
``/Rotate`` page whose text runs down is read line by line along it).
"""

from __future__ import annotations

import ctypes
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

__all__ = [
    "GARBAGE_FRACTION",
    "IMAGE_AREA_FRACTION",
    "MAX_PAGE_CHARS",
    "MODES",
    "PdfTextMode",
    "TextLayer",
    "TextLine",
    "decide",
    "read_text_layer",
]

PdfTextMode = Literal["auto", "ocr", "text"]
MODES: tuple[str, ...] = ("auto", "ocr", "text")
#: characters of one page's text layer read at most (a dense A4 page of 8-pt text holds ~10 000;
#: 100 000 leaves room for tables and small print while bounding the per-character work to
#: ~0.5 CPU-s).
MAX_PAGE_CHARS = 100_000
#: a layer with more than this fraction of garbage characters (of its non-space ones) is no text.
GARBAGE_FRACTION = 0.1
#: a page with visible text whose images cover more than this fraction of its area is OCRed whole.
IMAGE_AREA_FRACTION = 0.25
#: a character whose box lies more than this fraction of the page's size outside it is garbage.
OUTSIDE_MARGIN = 0.05
#: text render modes that draw nothing (ISO 32000-1 Table 106: 3 invisible, 7 clip only).
INVISIBLE_MODES = frozenset((3, 7))


@dataclass
class TextLine:
    """One line of a text layer: its text, ``box`` ``[x0, y0, x1, y1]`` in displayed page px,
    its words as ``(text, box)`` pairs (same units) and its writing ``direction`` (clockwise
    degrees on the displayed page, a multiple of 90: a /Rotate 90 page whose text is drawn
    upright in user space shows it running down, 90)."""

    text: str
    box: list[float]
    words: list[tuple[str, list[float]]] = field(default_factory=list)
    direction: int = 0

    @property
    def quad(self) -> list[list[float]]:
        """The box's corners clockwise from the TEXT's top-left (``direction``: the clockwise
        quarter turn, 0/90/180/270 degrees, of the writing direction on the displayed page), as
        DBNet's quads are ordered, so that lines are grouped in the text's own frame."""
        x0, y0, x1, y1 = self.box
        corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]  # top-left, clockwise, upright text
        shift = {0: 0, 90: 1, 180: 2, 270: 3}[self.direction]
        return corners[shift:] + corners[:shift]


@dataclass
class TextLayer:
    """What one page's text layer holds (counts of non-space characters).

    Attributes:
        chars: characters PDFium counts on the page (generated spaces and breaks included).
        visible, invisible: non-space characters drawn visibly / in an invisible render mode.
        garbage: non-space characters without usable Unicode or far outside the page.
        image_fraction: area of the page covered by image objects (bounding boxes, summed, capped at 1).
        lines: the lines (empty when the layer was not read: over the bound).
        too_large: ``chars`` exceeded the bound, nothing was read.
        rotation: the page's ``/Rotate`` (0, 90, 180, 270: clockwise when displayed).
    """

    chars: int = 0
    visible: int = 0
    invisible: int = 0
    garbage: int = 0
    image_fraction: float = 0.0
    lines: list[TextLine] = field(default_factory=list)
    too_large: bool = False
    rotation: int = 0


def _is_garbage_code(code: int) -> bool:
    """U+0000, U+FFFD, C0/C1 controls, private-use code points (BMP and planes 15-16)."""
    if code in (0, 0xFFFD):
        return True
    category = unicodedata.category(chr(code)) if code < 0x110000 else "Cn"
    return category in ("Cc", "Co", "Cs")


class _DisplayMap:
    """PDF user space (points, y up) -> displayed page pixels (y down, ``/Rotate`` applied)."""

    def __init__(self, page: pdfium.PdfPage, scale: float):
        self.x0, self.y0, x1, y1 = page.get_bbox()  # the effective crop box (inherited too, unrotated)
        self.w, self.h = (x1 - self.x0) * scale, (y1 - self.y0) * scale
        self.scale, self.rotation = scale, page.get_rotation() % 360
        #: the displayed page's size, px (width and height swapped by a quarter turn)
        self.width, self.height = (self.h, self.w) if self.rotation in (90, 270) else (self.w, self.h)

    def box(self, left: float, bottom: float, right: float, top: float) -> list[float]:
        """An axis-aligned user-space box -> ``[x0, y0, x1, y1]`` displayed px (0.1 px precision)."""
        points = [self._point(x, y) for x, y in ((left, bottom), (right, top))]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        return [round(v, 1) for v in (min(xs), min(ys), max(xs), max(ys))]

    def _point(self, x: float, y: float) -> tuple[float, float]:
        px, py = (x - self.x0) * self.scale, self.h - (y - self.y0) * self.scale  # unrotated page px
        if self.rotation == 90:
            return self.h - py, px
        if self.rotation == 180:
            return self.w - px, self.h - py
        if self.rotation == 270:
            return py, self.w - px
        return px, py


def _image_fraction(page: pdfium.PdfPage) -> float:
    """Fraction of the page (its effective crop box) covered by image objects' bounds (summed, capped at 1)."""
    x0, y0, x1, y1 = page.get_bbox()
    area = max((x1 - x0) * (y1 - y0), 1e-9)
    covered = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2):
        left, bottom, right, top = obj.get_bounds()
        covered += max(0.0, min(right, x1) - max(left, x0)) * max(0.0, min(top, y1) - max(bottom, y0))
    return float(min(1.0, covered / area))


def read_text_layer(page: pdfium.PdfPage, scale: float, max_chars: int = MAX_PAGE_CHARS) -> TextLayer:
    """Read one PDF page's text layer: counts (visible, invisible, garbage), lines with boxes.

    Args:
        page: an open pypdfium2 page.
        scale: render scale, pixels per point (``dpi / 72``); boxes come out in displayed page px.
        max_chars: the bound; a page with more characters is not read (``too_large``).

    Returns:
        A :class:`TextLayer`. Never raises for odd content (a character PDFium cannot box is skipped).
    """
    textpage = page.get_textpage()
    try:
        layer = TextLayer(chars=textpage.count_chars(), image_fraction=_image_fraction(page),
                          rotation=page.get_rotation() % 360)
        if layer.chars > max_chars:
            layer.too_large = True
            return layer
        if layer.chars <= 0:
            return layer
        display = _DisplayMap(page, scale)
        margin_x, margin_y = OUTSIDE_MARGIN * display.width, OUTSIDE_MARGIN * display.height
        modes: dict[int, int] = {}
        left, bottom, right, top = (ctypes.c_double() for _ in range(4))
        words: list[tuple[str, list[float]]] = []
        word_text, word_box = "", None
        lines: list[TextLine] = []
        directions: dict[int, int] = {}

        def end_word() -> None:
            nonlocal word_text, word_box
            if word_text and word_box is not None:
                words.append((word_text, word_box))
            word_text, word_box = "", None

        def end_line() -> None:
            end_word()
            if words:
                box = [min(b[0] for _, b in words), min(b[1] for _, b in words),
                       max(b[2] for _, b in words), max(b[3] for _, b in words)]
                direction = max(directions, key=directions.__getitem__) if directions else 0
                lines.append(TextLine(" ".join(t for t, _ in words), box, list(words), direction))
            words.clear()
            directions.clear()

        raw = textpage.raw
        for i in range(layer.chars):
            code = pdfium_c.FPDFText_GetUnicode(raw, i)
            if code in (0x0A, 0x0D):
                end_line()
                continue
            if code in (0x20, 0x09, 0xA0, 0x02):  # spaces; 0x02: PDFium's generated hyphen marker
                end_word()
                continue
            obj = pdfium_c.FPDFText_GetTextObject(raw, i)
            key = ctypes.cast(obj, ctypes.c_void_p).value or 0
            if key not in modes:
                modes[key] = pdfium_c.FPDFTextObj_GetTextRenderMode(obj) if key else 0
            if modes[key] in INVISIBLE_MODES:
                layer.invisible += 1
            else:
                layer.visible += 1
            if not pdfium_c.FPDFText_GetCharBox(raw, i, left, right, bottom, top):
                layer.garbage += 1
                continue
            box = display.box(left.value, bottom.value, right.value, top.value)
            outside = (box[2] < -margin_x or box[0] > display.width + margin_x
                       or box[3] < -margin_y or box[1] > display.height + margin_y)
            if _is_garbage_code(code) or pdfium_c.FPDFText_HasUnicodeMapError(raw, i) or outside:
                layer.garbage += 1
                continue
            word_text += chr(code)
            # PDFium's angle: radians in [0, 2 pi), clockwise as displayed before /Rotate (text drawn
            # turned 90 degrees counter-clockwise in user space gives 3 pi / 2); -1: unknown
            angle = pdfium_c.FPDFText_GetCharAngle(raw, i)
            direction = (display.rotation + round(math.degrees(max(angle, 0.0)) / 90) * 90) % 360
            directions[direction] = directions.get(direction, 0) + 1
            word_box = box if word_box is None else [min(word_box[0], box[0]), min(word_box[1], box[1]),
                                                     max(word_box[2], box[2]), max(word_box[3], box[3])]
        end_line()
        layer.lines = lines
        return layer
    finally:
        textpage.close()


def decide(layer: TextLayer | None, mode: str) -> tuple[Literal["pdf-text", "ocr"], str]:
    """Where a page's text comes from: (``"pdf-text"`` or ``"ocr"``, the reason).

    Reasons: ``mode`` (mode ``ocr``), ``not-pdf`` (no layer), ``text-too-large`` (over the
    bound), ``no-text``, ``garbage-text`` (> :data:`GARBAGE_FRACTION` garbage),
    ``invisible-text`` (mode ``auto``: most text invisible, an earlier OCR pass),
    ``text-and-images`` (mode ``auto``: images cover > :data:`IMAGE_AREA_FRACTION` of the
    page), ``text-layer`` (read from the PDF).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown PDF text mode {mode!r}; known: {', '.join(MODES)}")
    if mode == "ocr":
        return "ocr", "mode"
    if layer is None:
        return "ocr", "not-pdf"
    if layer.too_large:
        return "ocr", "text-too-large"
    total = layer.visible + layer.invisible
    if total == 0:
        return "ocr", "no-text"
    if layer.garbage > GARBAGE_FRACTION * total:
        return "ocr", "garbage-text"
    if not layer.lines:
        return "ocr", "no-text"
    if mode == "auto":
        if layer.invisible > layer.visible:
            return "ocr", "invisible-text"
        if layer.image_fraction > IMAGE_AREA_FRACTION:
            return "ocr", "text-and-images"
    return "pdf-text", "text-layer"


def layer_regions(layer: TextLayer, page_index: int) -> list[dict[str, Any]]:
    """A text layer's lines as the region dicts of a results event, in reading order.

    One region per PDFium line, each its own visual line (``line_index``): ``region_id``
    ``p<page>-t<order>``, ``block_index`` (:func:`ocrstream.ocr.layout.block_ids`), ``order``,
    ``box``, ``quad``, ``text``, ``confidence`` 1.0, ``char_probs`` (1.0 each), ``words``
    (confidence 1.0) and ``source`` ``"pdf-text"``. Boxes in displayed page px. Lines keep
    PDFium's order (the PDF's own text, as pypdfium2 extracts it) on an unrotated page with
    upright text; a ``/Rotate`` page, or text running down, up or upside down, is ordered in
    the text's own frame as displayed (:func:`ocrstream.ocr.detection.visual_lines` on the
    quads from the text's top-left, :attr:`TextLine.quad`): there PDFium's order follows the
    unrotated page (a landscape page made by ``/Rotate 90`` came out last line first).
    """
    from ocrstream.ocr.detection import visual_lines
    from ocrstream.ocr.layout import block_ids

    quads = [line.quad for line in layer.lines]
    weights: dict[int, int] = {}
    for line in layer.lines:
        weights[line.direction] = weights.get(line.direction, 0) + len(line.text)
    if layer.rotation == 0 and (not weights or max(weights, key=weights.__getitem__) == 0):
        order_of = list(range(len(layer.lines)))
    else:
        order_of = [i for group in visual_lines(quads, span_scale=1.0) for i in group]
    ordered = list(enumerate(order_of))  # (line_index, index into layer.lines)
    blocks = block_ids([layer.lines[i].box for _, i in ordered], [line_id for line_id, _ in ordered])
    regions = []
    for order, ((line_id, i), block) in enumerate(zip(ordered, blocks)):
        line = layer.lines[i]
        regions.append({
            "region_id": f"p{page_index}-t{order}", "page_index": page_index, "block_index": block,
            "line_index": line_id, "order": order, "box": line.box, "quad": quads[i], "text": line.text,
            "confidence": 1.0, "char_probs": [1.0] * len(line.text),
            "words": [{"text": t, "box": b, "confidence": 1.0} for t, b in line.words], "source": "pdf-text"})
    return regions

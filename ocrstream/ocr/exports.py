"""Standard exports of a :class:`~ocrstream.ocr.document.Document`: hOCR, ALTO XML, searchable PDF.

* hOCR 1.2 (http://kba.github.io/hocr-spec/1.2/): XHTML with ``ocr_page`` > ``ocr_carea`` (a
  block) > ``ocr_par`` > ``ocr_line`` (a visual line) > ``ocrx_word``; ``title`` carries ``bbox x0 y0 x1 y1`` (integer page pixels) and
  ``x_wconf`` (confidence 0-100).
* ALTO v4 (https://www.loc.gov/standards/alto/v4/alto-4-4.xsd): ``Page`` > ``PrintSpace`` >
  ``TextBlock`` > ``TextLine`` > ``String``/``SP``; ``MeasurementUnit`` pixel, ``WC`` in [0, 1].

* Searchable PDF (:func:`to_searchable_pdf`): the original pages with an invisible text layer
  (PDF text render mode 3) at the word boxes, as OCRmyPDF makes it - with OCRmyPDF's own
  fpdf2 text-layer renderer and its glyphless font, grafted onto the pages with pikepdf.

Regions without word boxes are exported as one word spanning the region.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict
from xml.etree import ElementTree as ET

from ocrstream.errors import BadInputError, ConfigurationError
from ocrstream.ocr.decode import Budget, OpenedDocument, open_document
from ocrstream.ocr.document import Box, Document, Page

if TYPE_CHECKING:
    from ocrmypdf.models.ocr_element import OcrElement

ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"


def _bbox(box: Box) -> str:
    return "bbox " + " ".join(str(round(v)) for v in box)


def to_hocr(doc: Document) -> str:
    """The document as an hOCR 1.2 XHTML string."""
    html = ET.Element("html", xmlns="http://www.w3.org/1999/xhtml", lang="en")
    head = ET.SubElement(html, "head")
    ET.SubElement(head, "title").text = f"ocrstream {doc.document_id}"
    ET.SubElement(head, "meta", {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"})
    ET.SubElement(head, "meta", name="ocr-system", content="ocrstream")
    ET.SubElement(head, "meta", name="ocr-capabilities", content="ocr_page ocr_carea ocr_line ocrx_word")
    body = ET.SubElement(html, "body")
    for page in doc.pages:
        n = page.page_index + 1
        p = ET.SubElement(body, "div", {"class": "ocr_page", "id": f"page_{n}",
                                        "title": f"bbox 0 0 {page.width} {page.height}; ppageno {page.page_index}"})
        for b, block in enumerate(page.blocks, start=1):
            area = ET.SubElement(p, "div", {"class": "ocr_carea", "id": f"block_{n}_{b}", "title": _bbox(block.box)})
            par = ET.SubElement(area, "p", {"class": "ocr_par", "id": f"par_{n}_{b}", "title": _bbox(block.box)})
            for k, line in enumerate(block.lines, start=1):
                span = ET.SubElement(par, "span", {"class": "ocr_line", "id": f"line_{n}_{b}_{k}",
                                                   "title": _bbox(line.box)})
                for w, word in enumerate(line.words, start=1):
                    el = ET.SubElement(span, "span", {"class": "ocrx_word", "id": f"word_{n}_{b}_{k}_{w}",
                                                      "title": f"{_bbox(word.box)}; x_wconf {round(word.confidence * 100)}"})
                    el.text = word.text
                    el.tail = " "
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"'
            ' "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
            + ET.tostring(html, encoding="unicode"))


def to_alto(doc: Document) -> str:
    """The document as an ALTO v4 XML string."""
    ET.register_namespace("", ALTO_NS)
    q: Callable[[str], str] = lambda tag: f"{{{ALTO_NS}}}{tag}"  # noqa: E731
    alto = ET.Element(q("alto"))
    desc = ET.SubElement(alto, q("Description"))
    ET.SubElement(desc, q("MeasurementUnit")).text = "pixel"
    info = ET.SubElement(ET.SubElement(desc, q("sourceImageInformation")), q("fileName"))
    info.text = ((doc.meta.get("document") or {}).get("filename")) or doc.document_id
    layout = ET.SubElement(alto, q("Layout"))
    for page in doc.pages:
        n = page.page_index
        pg = ET.SubElement(layout, q("Page"), ID=f"p{n}", PHYSICAL_IMG_NR=str(n + 1),
                           WIDTH=str(page.width), HEIGHT=str(page.height))
        space = ET.SubElement(pg, q("PrintSpace"), **_pos((0, 0, page.width, page.height)))
        for b, block in enumerate(page.blocks):
            tb = ET.SubElement(space, q("TextBlock"), ID=f"p{n}_b{b}", **_pos(block.box))
            for k, line in enumerate(block.lines):
                tl = ET.SubElement(tb, q("TextLine"), ID=f"p{n}_b{b}_l{k}", **_pos(line.box))
                for w, word in enumerate(line.words):
                    if w:
                        ET.SubElement(tl, q("SP"))
                    ET.SubElement(tl, q("String"), CONTENT=word.text, WC=f"{word.confidence:.3f}", **_pos(word.box))
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(alto, encoding="unicode")


class _Pos(TypedDict):
    """ALTO position attributes (keyword arguments of ``ET.SubElement``)."""

    HPOS: str
    VPOS: str
    WIDTH: str
    HEIGHT: str


def _pos(box: Box) -> _Pos:
    x0, y0, x1, y1 = box
    return {"HPOS": f"{x0:.0f}", "VPOS": f"{y0:.0f}", "WIDTH": f"{max(0.0, x1 - x0):.0f}",
            "HEIGHT": f"{max(0.0, y1 - y0):.0f}"}


# --------------------------------------------------------------------------- searchable PDF


#: The libraries of the searchable-PDF export (the ``pdf`` extra: ``pip install 'ocrstream[pdf]'``).
PDF_EXTRA = ("ocrmypdf", "pikepdf", "img2pdf")


def require_pdf_extra() -> None:
    """Raise ConfigurationError naming the missing libraries when the ``pdf`` extra is not installed."""
    missing = [name for name in PDF_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(f"the searchable-PDF export needs the 'pdf' extra (missing: {', '.join(missing)}): "
                                 "pip install 'ocrstream[pdf]'")


def to_searchable_pdf(doc: Document, original: bytes, budget: Budget | None = None) -> bytes:
    """The document as a searchable PDF: its original pages, each with an invisible text layer
    whose words sit at their boxes.

    ``original`` is the submitted file, opened by the decoder (:func:`ocrstream.ocr.decode.open_document`
    under ``budget``, which should be the one the document was read with; default :class:`Budget`): its pages are the
    decoder's pages, the one source of truth for how many pages and frames a file has (an
    animated GIF/WebP/APNG: every frame a page). The base PDF is, in order of preference:

    * a PDF: the original, untouched, when pikepdf (QPDF) sees the decoder's page count and the
      decoder normalised no page box, else the decoder's pages copied by PDFium into a PDF with
      a flat page tree and the normalised boxes (a page tree nested deeper than QPDF follows, a
      crop box outside the media box);
    * a one-frame image or a TIFF: the original embedded by img2pdf (JPEG/JPEG 2000 data as-is,
      other formats losslessly) when img2pdf can and gives the decoder's page count;
    * otherwise (animated frames, 16-bit TIFF samples, an alpha channel, a PNG whose text chunk
      Pillow refuses to inflate...): each decoded page, ``(H, W, 3) uint8``, encoded as a
      lossless PNG and embedded by img2pdf; the pixels are those that were read.

    Word boxes are page pixels (``Page.width`` x ``Page.height``) and are scaled to each page's
    crop box. The text layer is OCRmyPDF's renderer (ocrmypdf.fpdf_renderer, its Occulta
    glyphless font; each word stretched to its box width). Boxes are in the page as displayed
    (decoding renders a ``/Rotate`` page turned, as a viewer shows it); pikepdf's ``add_overlay``
    (QPDF ``placeFormXObject``) turns the layer back into the rotated page's user space, so the
    words land on their text (tests/test_pdf_text.py checks all four rotations). A page whose
    text was read from the PDF's own text layer (``text_source`` ``pdf-text``) is left as it is:
    no second text layer on a born-digital page, nor on a page without words.

    CPU-heavy (hundreds of ms per page): call it in a worker thread. Raises ValueError when the
    original cannot be opened by the decoder (not an image or PDF, truncated, over ``budget``...:
    the message names the typed error) or its page count differs from the document's, and
    ConfigurationError when the ``pdf`` extra (ocrmypdf, pikepdf, img2pdf) is not installed.
    """
    require_pdf_extra()
    import pikepdf

    try:
        opened = open_document(original, budget or Budget())
    except BadInputError as exc:
        raise ValueError(f"the original cannot be read as pages ({type(exc).__name__}): {exc}") from exc
    with opened:
        if len(opened) != len(doc.pages):
            raise ValueError(f"the original has {len(opened)} pages, the document {len(doc.pages)}")
        base = pikepdf.open(io.BytesIO(_base_pdf(original, opened)))
    pages = {p.page_index: p for p in doc.pages}
    ocr_pages = [pages[i] for i in sorted(pages) if pages[i].text_source != "pdf-text" and _has_words(pages[i])]
    if ocr_pages:
        layer = pikepdf.open(io.BytesIO(_text_layer(ocr_pages)))
        for page, text_page in zip(ocr_pages, layer.pages):
            target = base.pages[sorted(pages).index(page.page_index)]
            target.add_overlay(text_page, pikepdf.Rectangle(*[float(v) for v in target.cropbox]))
    out = io.BytesIO()
    base.save(out)
    return out.getvalue()


def _base_pdf(original: bytes, opened: OpenedDocument) -> bytes:
    """A PDF of exactly ``opened``'s pages (see :func:`to_searchable_pdf` for the order tried)."""
    if opened.kind == "pdf":
        if not opened.normalised and _pdf_page_count(original) == len(opened):
            return original
        flat = opened.as_pdf()
        assert flat is not None  # a PDF's decoder always copies its pages
        return flat
    if not opened.animated:
        embedded = _img2pdf(original)
        if embedded is not None and _pdf_page_count(embedded) == len(opened):
            return embedded
    return _decoded_pages_pdf(opened)


def _pdf_page_count(pdf: bytes) -> int | None:
    """Pages pikepdf (QPDF) finds in ``pdf``; None when it cannot walk the page tree."""
    import pikepdf

    try:
        with pikepdf.open(io.BytesIO(pdf)) as opened:
            return len(opened.pages)
    except pikepdf.PdfError:
        return None


def _img2pdf(original: bytes) -> bytes | None:
    """``original`` embedded by img2pdf without re-encoding; None when img2pdf cannot do so."""
    import img2pdf

    try:
        return bytes(img2pdf.convert(original, rotation=img2pdf.Rotation.ifvalid))
    except (img2pdf.ImageOpenError, img2pdf.AlphaChannelError, img2pdf.UnsupportedColorspaceError,
            img2pdf.JpegColorspaceError, ValueError, OSError):
        return None


#: img2pdf's page scale without a dpi in the image (96 dpi: 72 / 96 points per pixel).
DEFAULT_POINTS_PER_PIXEL = 72 / 96
#: the largest page side, points (ISO 32000-1 Annex C.2: 14,400 units, Acrobat's limit).
MAX_PAGE_POINTS = 14_400


def _page_layout(width_px: float, height_px: float, _dpi: object) -> tuple[float, float, float, float]:
    """img2pdf layout: the page at 96 dpi, scaled down so its longer side is at most
    :data:`MAX_PAGE_POINTS`; a side under 3 points is kept (a 1-pixel-high strip has no other
    size at a uniform scale). Returns page and image (width, height) in points."""
    scale = min(DEFAULT_POINTS_PER_PIXEL, MAX_PAGE_POINTS / max(width_px, height_px))
    return width_px * scale, height_px * scale, width_px * scale, height_px * scale


def _decoded_pages_pdf(opened: OpenedDocument) -> bytes:
    """Each page as the decoder gives it, ``(H, W, 3) uint8`` BGR, as a lossless PNG on its own
    PDF page (img2pdf's own PDF writer, which takes any page size; :func:`_page_layout`)."""
    import cv2
    import img2pdf

    pngs = []
    for page in opened.pages():
        ok, png = cv2.imencode(".png", page)
        if not ok:
            raise ValueError(f"a {page.shape} page could not be encoded as PNG")
        pngs.append(png.tobytes())
    return bytes(img2pdf.convert(pngs, layout_fun=_page_layout, engine=img2pdf.Engine.internal))


def _has_words(page: Page) -> bool:
    """The page has a word with text (else it gets no text layer)."""
    return any(w.text.strip() for block in page.blocks for line in block.lines for w in line.words)


def _ocr_page(page: Page) -> OcrElement:
    """One page as OCRmyPDF's OcrElement tree: page > paragraph (block) > line > word, boxes
    in page pixels with a top-left origin."""
    from ocrmypdf.models.ocr_element import BoundingBox, OcrClass, OcrElement

    bbox: Callable[[Box], BoundingBox] = lambda b: BoundingBox(*[float(v) for v in b])  # noqa: E731
    return OcrElement(ocr_class=OcrClass.PAGE, bbox=BoundingBox(0, 0, page.width, page.height), children=[
        OcrElement(ocr_class=OcrClass.PARAGRAPH, bbox=bbox(block.box), children=[
            OcrElement(ocr_class=OcrClass.LINE, bbox=bbox(line.box), children=[
                OcrElement(ocr_class=OcrClass.WORD, bbox=bbox(w.box), text=w.text, confidence=w.confidence)
                for w in line.words if w.text.strip()])
            for line in block.lines])
        for block in page.blocks])


def _text_layer(pages: list[Page]) -> bytes:
    """A text-only PDF, one page per ``Page`` at 72 dpi (1 pixel = 1 point), all text invisible."""
    import ocrmypdf
    from ocrmypdf.font import MultiFontManager
    from ocrmypdf.fpdf_renderer import Fpdf2MultiPageRenderer

    fonts = MultiFontManager(Path(ocrmypdf.__file__).parent / "data")
    renderer = Fpdf2MultiPageRenderer([(p.page_index, _ocr_page(p), 72.0) for p in pages], fonts,
                                      invisible_text=True)
    with tempfile.TemporaryDirectory(prefix="ocrstream-pdf-") as tmp:
        path = Path(tmp) / "layer.pdf"
        renderer.render(path)
        return path.read_bytes()

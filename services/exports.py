"""Standard exports of a :class:`~services.document.Document`: hOCR and ALTO XML.

* hOCR 1.2 (http://kba.github.io/hocr-spec/1.2/): XHTML with ``ocr_page`` > ``ocr_carea`` (a
  block) > ``ocr_par`` > ``ocr_line`` (a visual line) > ``ocrx_word``; ``title`` carries ``bbox x0 y0 x1 y1`` (integer page pixels) and
  ``x_wconf`` (confidence 0-100).
* ALTO v4 (https://www.loc.gov/standards/alto/v4/alto-4-4.xsd): ``Page`` > ``PrintSpace`` >
  ``TextBlock`` > ``TextLine`` > ``String``/``SP``; ``MeasurementUnit`` pixel, ``WC`` in [0, 1].

Regions without word boxes are exported as one word spanning the region.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from services.document import Box, Document

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
    q = lambda tag: f"{{{ALTO_NS}}}{tag}"  # noqa: E731
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


def _pos(box: Box) -> dict[str, str]:
    x0, y0, x1, y1 = box
    return {"HPOS": f"{x0:.0f}", "VPOS": f"{y0:.0f}", "WIDTH": f"{max(0.0, x1 - x0):.0f}",
            "HEIGHT": f"{max(0.0, y1 - y0):.0f}"}

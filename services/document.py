"""The document model every reader of ocrstream's output uses: Document > Page > Line > Word.

Boxes are ``(x0, y0, x1, y1)`` in page pixels (float), confidences in [0, 1]. Built from an
``ocr.results.v1`` event (:meth:`Document.from_results`) and rendered by :meth:`Document.export`
(JSON), :meth:`Document.render_text`, :func:`services.exports.to_hocr` and
:func:`services.exports.to_alto`. After docTR's ``io/elements.py`` (one tree, one ``export()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Word:
    """One word of a line: text, box in page pixels, confidence in [0, 1]."""

    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class Line:
    """One detected text region (a printed line or a part of one)."""

    region_id: str
    text: str
    box: Box
    confidence: float
    line_index: int
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Page:
    """One page: size in pixels and its lines in reading order."""

    page_index: int
    width: int
    height: int
    lines: tuple[Line, ...] = ()

    def visual_lines(self) -> list[list[Line]]:
        """Lines grouped by visual line (same ``line_index``), in reading order."""
        return [list(g) for _, g in groupby(self.lines, key=lambda line: line.line_index)]


@dataclass(frozen=True)
class Document:
    """A processed document: status, pages (when done), error (when failed)."""

    document_id: str
    status: str
    pages: tuple[Page, ...] = ()
    error: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_results(cls, event: dict[str, Any]) -> "Document":
        """Build from an ``ocr.results.v1`` event (regions ordered by page and reading order)."""
        by_page: dict[int, list[Line]] = {p["page_index"]: [] for p in event["pages"]}
        for r in sorted(event["regions"], key=lambda r: (r["page_index"], r["line_index"], r["order"])):
            words = tuple(Word(w["text"], tuple(w["box"]), w["confidence"]) for w in r.get("words", ()))
            by_page[r["page_index"]].append(Line(r["region_id"], r["text"], tuple(r["box"]),
                                                 r["confidence"], r["line_index"], words))
        pages = tuple(Page(p["page_index"], p["width"], p["height"], tuple(by_page[p["page_index"]]))
                      for p in event["pages"])
        meta = {"document": event.get("document"), "timestamps": event.get("timestamps")}
        return cls(event["document_id"], event["status"], pages, event.get("error"), meta)

    def render_text(self) -> str:
        """Plain text: a visual line's regions joined by a space, lines by newline, pages by form feed."""
        return "\f".join("\n".join(" ".join(l.text for l in vl if l.text) for vl in p.visual_lines())
                         for p in self.pages)

    def export(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole tree."""
        return asdict(self)

"""The document model every reader of ocrstream's output uses: Document > Page > Line > Word,
and the template :class:`FieldSpec` a region may hold (preprocess cuts it, store validates it).

Boxes are ``(x0, y0, x1, y1)`` in page pixels (float), confidences in [0, 1]. Built from an
``ocr.results.v1`` event (:meth:`Document.from_results`) and rendered by :meth:`Document.export`
(JSON), :meth:`Document.render_text`, :func:`services.exports.to_hocr` and
:func:`services.exports.to_alto`. After docTR's ``io/elements.py`` (one tree, one ``export()``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import groupby
import re
from typing import Any, Literal, get_args

Box = tuple[float, float, float, float]

FieldType = Literal["text", "integer", "decimal", "date", "time", "code"]
_FIELD_TYPES = frozenset(get_args(FieldType))


@dataclass(frozen=True)
class FieldSpec:
    """One named field of a fixed-layout template.

    Attributes:
        name: field name (from the template YAML).
        type: one of :data:`FieldType`; ``"text"`` gets free-text rules and an optional regex.
        regex: pattern (Python ``re``) the corrected value must full-match: for integer and
            decimal the number without its unit, otherwise the corrected text.
        unit: e.g. ``"g/dL"``, ``"RM"``: allowed (and ignored) before or after an integer or
            decimal, case-insensitively, with or without a space.
        min, max: inclusive range of an integer or decimal value.

    Raises:
        ValueError: unknown ``type``, a ``regex`` that does not compile, ``min > max``, or
            ``min``/``max``/``unit`` on a type other than integer/decimal.
    """

    name: str
    type: FieldType = "text"
    regex: str | None = None
    unit: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.type not in _FIELD_TYPES:
            raise ValueError(f"field {self.name!r}: unknown type {self.type!r}, expected one of {sorted(_FIELD_TYPES)}")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"field {self.name!r}: bad regex {self.regex!r}: {exc}") from exc
        numeric = self.type in ("integer", "decimal")
        if not numeric and (self.min is not None or self.max is not None or self.unit):
            raise ValueError(f"field {self.name!r}: min/max/unit apply to integer and decimal fields only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"field {self.name!r}: min {self.min} > max {self.max}")


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

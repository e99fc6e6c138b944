"""The document model every reader of ocrstream's output uses:
Document > Page > Block > Line (a visual line) > Region (a cut box) > Word,
and the template :class:`FieldSpec` a region may hold (preprocess cuts it, store validates it).

Boxes are ``(x0, y0, x1, y1)`` in page pixels (float), confidences in [0, 1]. Built from an
``ocr.results.v1`` event (:meth:`Document.from_results`) and rendered by :meth:`Document.export`
(JSON), :meth:`Document.render_text`, :func:`ocrstream.ocr.exports.to_hocr` and
:func:`ocrstream.ocr.exports.to_alto`. After docTR's ``io/elements.py`` (one tree, one ``export()``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from typing import Any, Literal, get_args

from ocrstream.contracts import event_models as wire
from ocrstream.contracts.event_models import UNSET, ResultRegion, ResultsEvent
from ocrstream.contracts.events import RESULTS, convert, to_json_object

Box = tuple[float, float, float, float]

#: How text printed for a person separates pages (``ocrstream ocr``, the demo): a form feed is invisible.
VISIBLE_PAGE_BREAK = "\n[page break]\n"

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
    """One word: text, box in page pixels, confidence in [0, 1]."""

    text: str
    box: Box
    confidence: float


@dataclass(frozen=True)
class Region:
    """One cut region (a detected text box or a template field): a whole printed line or a part
    of one (receipts often split a row into label and value boxes)."""

    region_id: str
    text: str
    box: Box
    confidence: float
    words: tuple[Word, ...] = ()
    field: dict[str, Any] | None = None
    source: str | None = None  # "pdf-text" (the PDF's own text layer) or "ocr"; None: not recorded

    def word_list(self) -> tuple[Word, ...]:
        """The region's words; a region without word boxes is one word spanning the region."""
        return self.words or ((Word(self.text, self.box, self.confidence),) if self.text else ())


@dataclass(frozen=True)
class Line:
    """One visual line: the regions side by side on it, left to right."""

    regions: tuple[Region, ...]

    @property
    def text(self) -> str:
        return " ".join(r.text for r in self.regions if r.text)

    @property
    def box(self) -> Box:
        return union(r.box for r in self.regions)

    @property
    def words(self) -> tuple[Word, ...]:
        return tuple(w for r in self.regions for w in r.word_list())


@dataclass(frozen=True)
class Block:
    """Consecutive visual lines set apart from the next block by vertical whitespace."""

    lines: tuple[Line, ...]

    @property
    def box(self) -> Box:
        return union(line.box for line in self.lines)


@dataclass(frozen=True)
class Page:
    """One page: size in pixels and its blocks in reading order."""

    page_index: int
    width: int
    height: int
    blocks: tuple[Block, ...] = ()
    text_source: str | None = None  # "pdf-text" or "ocr" (ocrstream.ocr.pdftext.decide); None: not recorded

    @property
    def lines(self) -> tuple[Line, ...]:
        return tuple(line for block in self.blocks for line in block.lines)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines if line.text)


def union(boxes: Iterable[Box]) -> Box:
    """The smallest box containing every box of ``boxes`` (at least one)."""
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _page(page: wire.Page, regions: list[ResultRegion]) -> Page:
    """A :class:`Page` from its results-event regions (any order)."""
    def block(r: ResultRegion) -> int:
        return r.block_index or 0

    blocks = []
    for _, in_block in groupby(sorted(regions, key=lambda r: (block(r), r.line_index, r.order)), key=block):
        lines = []
        for _, line in groupby(in_block, key=lambda r: r.line_index):
            lines.append(Line(tuple(
                Region(r.region_id, r.text, _box(r.box), r.confidence,
                       tuple(Word(w.text, _box(w.box), w.confidence) for w in r.words or ()),
                       to_json_object(r.field) if r.field else None, _set(r.source)) for r in line)))
        blocks.append(Block(tuple(lines)))
    return Page(page.page_index, page.width, page.height, tuple(blocks), _set(page.text_source))


def _set(value: Any) -> Any:
    """``value``, or None when it is msgspec's UNSET (an optional field the event did not carry)."""
    return None if value is UNSET else value


def _box(box: list[int | float]) -> Box:
    x0, y0, x1, y1 = box
    return (x0, y0, x1, y1)


@dataclass(frozen=True)
class Document:
    """A processed document: status, pages (when done), error (when failed), and its fields:
    ``{name: {"text", "value", "valid", ...}}`` as the results event's ``fields`` (template
    fields, or receipt fields found without a template: :mod:`ocrstream.ocr.receipt_fields`)."""

    document_id: str
    status: str
    pages: tuple[Page, ...] = ()
    error: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_results(cls, event: ResultsEvent | Mapping[str, Any]) -> "Document":
        """Build from an ``ocr.results.v1`` event, or from a dict shaped like one (``document_id``,
        ``status``, ``pages``, ``regions``, optional ``error``, ``document``, ``timestamps``,
        ``fields``: e.g. the query API's rows); raises InvalidEventError for pages or regions that
        do not fit the results model."""
        if isinstance(event, Mapping):
            doc = cls.from_parts(
                event["document_id"], event["status"], convert(list[wire.Page], event["pages"], RESULTS),
                convert(list[ResultRegion], event["regions"], RESULTS), event.get("error"),
                {"document": event.get("document"), "timestamps": event.get("timestamps")})
            fields = event.get("fields") or {}
        else:
            doc = cls.from_parts(event.document_id, event.status, event.pages, event.regions,
                                 to_json_object(event.error) if event.error else None,
                                 {"document": to_json_object(event.document) if event.document else None,
                                  "timestamps": to_json_object(event.timestamps)})
            fields = {k: to_json_object(v) for k, v in event.fields.items()} if event.fields else {}
        return replace(doc, fields=dict(fields)) if fields else doc

    @classmethod
    def from_parts(cls, document_id: str, status: str, pages: Iterable[wire.Page],
                   regions: Iterable[ResultRegion], error: dict[str, str] | None = None,
                   meta: dict[str, Any] | None = None) -> "Document":
        """Build from typed results parts: each page gets its regions (matched by ``page_index``)."""
        regions = list(regions)
        built = tuple(_page(p, [r for r in regions if r.page_index == p.page_index]) for p in pages)
        return cls(document_id, status, built, error, meta or {})

    def render_text(self, page_break: str = "\f") -> str:
        """Plain text: a visual line's regions joined by a space, lines by newline, pages by
        ``page_break`` (a form feed, as in the results event; :data:`VISIBLE_PAGE_BREAK` for people)."""
        return page_break.join(page.text for page in self.pages)

    def export(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole tree."""
        return asdict(self)

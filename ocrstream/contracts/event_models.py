"""The event contracts as typed models: one :class:`msgspec.Struct` per topic.

These classes are the single source of the contracts. Every stage and reader builds and reads
events through them (:func:`ocrstream.contracts.events.encode` / :func:`~ocrstream.contracts.events.decode`),
and the JSON Schemas in ``schemas/`` are generated from them (``python -m schemas.generate``;
a test checks the committed files are the generated ones).

Wire format (JSON, compact, UTF-8): each event begins with its ``schema`` field (the msgspec
tag, e.g. ``"ocr.regions.v1"``); field names are the JSON keys. Optional fields default to
:data:`msgspec.UNSET` and are then left out of the JSON, exactly as today's producers leave
them out; a field set to ``None`` is written as ``null``. Unknown fields are ignored on decode
(the compatibility rule: consumers ignore what they do not know).

Constraints (the ones the hand-written schemas enforced: required fields, patterns, ranges,
array lengths, enums) are :class:`msgspec.Meta` annotations, checked on every decode; structs
built in Python are checked when encoded (:func:`~ocrstream.contracts.events.encode` decodes its
own output once). Boxes and quads are in page pixels; confidences and probabilities in [0, 1].

``ocr.raw.v1`` carries a document's bytes, not JSON: it has no model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

__all__ = [
    "UNSET", "UnsetType", "Box", "Quad", "Probability", "DocumentRef", "Timestamps", "Page", "FieldSpec",
    "Word", "LayerText", "Region", "RecognizedRegion", "ResultRegion", "Recognizer", "ErrorInfo", "FieldResult",
    "Source", "StageCost", "IngestedEvent", "RegionsEvent", "RecognizedEvent", "ResultsEvent", "DeadLetterEvent",
    "SourceKind", "TextSource", "FieldType", "AnyEvent", "MODELS", "PROB_DECIMALS", "compact_probs", "topic_of",
]

# ----------------------------------------------------------------------------- value types

NonEmpty = Annotated[str, Meta(min_length=1)]
Index = Annotated[int, Meta(ge=0)]
Pixels = Annotated[int, Meta(ge=1)]
#: A JSON number: ints stay ints and floats floats, so an event passed on is written back byte
#: for byte (a ``float`` field would turn ``12`` into ``12.0``).
Number = int | float
Probability = Annotated[int, Meta(ge=0, le=1)] | Annotated[float, Meta(ge=0, le=1)]
#: ISO 8601 date-time text (UTC), e.g. ``2026-11-21T23:42:05.123+00:00``; kept as text so the
#: wire bytes are exactly what the producer wrote (see :func:`ocrstream.contracts.events.now_iso`).
DateTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
Box = Annotated[list[Number], Meta(min_length=4, max_length=4, description="[x0, y0, x1, y1] in page pixels")]
Point = Annotated[list[Number], Meta(min_length=2, max_length=2)]
Quad = Annotated[list[Point], Meta(min_length=4, max_length=4,
                                   description="4 corners [x, y] in page pixels, clockwise from top-left")]
Sha256 = Annotated[str, Meta(pattern="^[0-9a-f]{64}$")]
SourceKind = Literal["cli", "http", "kafka", "bucket"]
TextSource = Literal["pdf-text", "ocr"]
FieldType = Literal["text", "integer", "decimal", "date", "time", "code"]


class _Model(Struct, kw_only=True, forbid_unknown_fields=False, gc=False):
    """Base of every model: unknown fields ignored on decode (each subclass also sets
    ``kw_only=True``: msgspec applies it per class, and it lets required fields follow optional ones)."""


# ----------------------------------------------------------------------------- parts

class DocumentRef(_Model, kw_only=True):
    """The original document in the bucket (claim check): object key, SHA-256 (64 hex digits),
    size in bytes, sanitised file name, the door it came through, the template named at ingest."""

    object_key: str
    content_sha256: Sha256
    size_bytes: Index
    filename: str | None | UnsetType = UNSET
    source: SourceKind
    template: Annotated[str | None, Meta(description="fixed-layout template named at ingest")] | UnsetType = UNSET
    external_id: Annotated[str, Meta(description="the raw-topic producer's key (raw door only)")] | UnsetType = UNSET
    callback_url: Annotated[str, Meta(max_length=2048, description=(
        "completion webhook named at submission: the store POSTs the signed result summary there"))] | UnsetType = UNSET
    api_key: Annotated[str, Meta(max_length=200, description=(
        "name of the API key the HTTP door admitted it with (the tenant); never the key itself"))] | UnsetType = UNSET


class Timestamps(_Model, kw_only=True):
    """When each stage finished with the document (ISO 8601, UTC); only ``ingested`` is required."""

    submitted: DateTime | UnsetType = UNSET
    ingested: DateTime
    preprocessed: DateTime | UnsetType = UNSET
    recognized: DateTime | UnsetType = UNSET
    stored: DateTime | UnsetType = UNSET
    failed: DateTime | UnsetType = UNSET


class Page(_Model, kw_only=True):
    """A page's size in pixels (the space of every box and quad on it)."""

    page_index: Index
    width: Pixels
    height: Pixels
    text_source: Annotated[TextSource, Meta(description="where the page's text came from: the PDF's own text "
                                                        "layer (pdf-text) or OCR of its pixels (ocr)")] \
        | UnsetType = UNSET
    ink: Annotated[Probability, Meta(description="fraction of the cleaned page that is ink (dark marks, "
                                                 "ocrstream/ocr/cleanup.py ink_fraction); OCRed pages "
                                                 "without a template only")] | UnsetType = UNSET


class FieldSpec(_Model, kw_only=True):
    """The template field a region holds: name, type, and optional regex, unit and range."""

    name: str
    type: FieldType
    regex: str | UnsetType = UNSET
    unit: str | UnsetType = UNSET
    min: Number | UnsetType = UNSET
    max: Number | UnsetType = UNSET


class Word(_Model, kw_only=True):
    """A word of a recognised line: text, box in page pixels, mean character probability."""

    text: str
    box: Box
    confidence: Probability


class LayerText(_Model, kw_only=True):
    """A region's text as the PDF's own text layer gives it (``source`` pdf-text): nothing to recognise."""

    text: str
    words: list[Word]


class Region(_Model, kw_only=True):
    """A text region of ``ocr.regions.v1``: id, page, block, crop object key, visual line,
    reading order, box/quad in page pixels, detector score or template field."""

    region_id: str
    page_index: Index
    block_index: Annotated[Index, Meta(description="block (paragraph) within the page, in reading order")] \
        | UnsetType = UNSET
    crop_key: Annotated[str, Meta(description="object key of the page's crop pack (ocrstream/storage/crops.py) or, "
                                              "without crop_offset/crop_shape, of an older per-region PNG")]
    crop_offset: Annotated[Index, Meta(description="byte offset of the crop in its page's unpacked crop pack; "
                                                   "comes with crop_shape")] | UnsetType = UNSET
    crop_shape: Annotated[list[Pixels], Meta(min_length=2, max_length=2,
                                             description="[height, width] of the crop, uint8 BGR; "
                                                         "comes with crop_offset")] | UnsetType = UNSET
    line_index: Annotated[Index, Meta(description="visual line within the page, in reading order")]
    order: Annotated[Index, Meta(description="position in the page's reading order")]
    box: Box
    quad: Quad | UnsetType = UNSET
    detection_score: Number | UnsetType = UNSET
    field: FieldSpec | UnsetType = UNSET
    source: Annotated[TextSource, Meta(description="pdf-text: read from the PDF's text layer; ocr: recognised")] \
        | UnsetType = UNSET
    layer_text: Annotated[LayerText, Meta(description="source pdf-text: the text and words from the PDF "
                                                       "(crop_key is then empty: no crop)")] | UnsetType = UNSET

    def __post_init__(self) -> None:
        """Raises ValueError (a validation error on decode) when only one of crop_offset/crop_shape is set."""
        if (self.crop_offset is UNSET) != (self.crop_shape is UNSET):
            raise ValueError("crop_offset and crop_shape come together")


class RecognizedRegion(Region, kw_only=True):
    """A region of ``ocr.recognized.v1``: a :class:`Region` plus its text, confidence (mean
    per-character probability), per-character probabilities (one per character of ``text``)
    and word boxes."""

    text: str
    confidence: Annotated[Probability, Meta(description="mean per-character probability")]
    char_probs: Annotated[list[Probability], Meta(description="one probability per character of text")] \
        | UnsetType = UNSET
    words: list[Word] | UnsetType = UNSET


class ResultRegion(_Model, kw_only=True):
    """A region of ``ocr.results.v1``: position, post-processed ``text`` and the recogniser's
    ``raw_text``, typed ``value`` of a template field, whether it ``valid``-ated and why not."""

    region_id: str
    page_index: Index
    block_index: Annotated[Index, Meta(description="block (paragraph) within the page, in reading order")] \
        | UnsetType = UNSET
    line_index: Annotated[Index, Meta(description="visual line within the page, in reading order")]
    order: Annotated[Index, Meta(description="position in the page's reading order")]
    box: Box
    quad: Quad | UnsetType = UNSET
    detection_score: Number | UnsetType = UNSET
    text: str
    confidence: Annotated[Probability, Meta(description="mean per-character probability")]
    words: list[Word] | UnsetType = UNSET
    field: FieldSpec | UnsetType = UNSET
    source: Annotated[TextSource, Meta(description="pdf-text: read from the PDF's text layer; ocr: recognised")] \
        | UnsetType = UNSET
    raw_text: Annotated[str, Meta(description="the recogniser's text before post-processing")] | UnsetType = UNSET
    value: Annotated[Any, Meta(description="typed value of a template field (int, float, ISO date/time, "
                                           "string); null for free text")] = UNSET
    valid: Annotated[bool | None, Meta(description="null for free text, else whether the field validated")] \
        | UnsetType = UNSET
    reason: str | None | UnsetType = UNSET
    needs_review: bool | UnsetType = UNSET


class Recognizer(_Model, kw_only=True):
    """The recogniser that read a document: name, execution provider, model version (optional:
    the shipped model's name or a fine-tuned model's manifest id)."""

    name: str
    provider: str
    model: str | UnsetType = UNSET


class ErrorInfo(_Model, kw_only=True):
    """Why a document failed: the stage, our error type's name, the message."""

    stage: str
    type: str
    message: str


class FieldResult(_Model, kw_only=True):
    """A field of a done document: typed value, corrected text, whether it validated. A template
    field has only these three; a receipt field found without a template
    (:mod:`ocrstream.ocr.receipt_fields`) also has its confidence, page, regions, boxes, source
    ``"receipt"`` and, for amounts, the currency."""

    value: Any = UNSET
    text: str | UnsetType = UNSET
    valid: bool | None | UnsetType = UNSET
    confidence: Annotated[Probability, Meta(description="receipt field: the regions' confidence times "
                                                        "the rule's certainty")] | UnsetType = UNSET
    page_index: Index | UnsetType = UNSET
    regions: Annotated[list[str], Meta(description="region ids the field was read from")] | UnsetType = UNSET
    boxes: Annotated[list[Box], Meta(description="word or region boxes the field was read from")] \
        | UnsetType = UNSET
    source: Annotated[Literal["template", "receipt"], Meta(description="receipt: found without a template")] \
        | UnsetType = UNSET
    currency: Annotated[str, Meta(description="ISO 4217 code of an amount, when printed")] | UnsetType = UNSET


class Source(_Model, kw_only=True):
    """Where a failed input came from: a Kafka record (topic, partition, offset), or the HTTP
    API / CLI (topic ``http`` or ``cli``, no offset)."""

    topic: str
    partition: int | UnsetType = UNSET
    offset: int | UnsetType = UNSET


Seconds = Annotated[int, Meta(ge=0)] | Annotated[float, Meta(ge=0)]


class StageCost(_Model, kw_only=True):
    """What one stage spent on a document (ocrstream/streaming/costs.py): process CPU seconds
    (its decoder workers' included; a batch shared by several documents split among them),
    wall seconds, bytes read (input record and objects) and bytes written (objects)."""

    stage: NonEmpty
    cpu_s: Seconds
    wall_s: Seconds
    bytes_in: Index
    bytes_out: Index


Costs = Annotated[list[StageCost], Meta(description="each stage's cost for the document, in stage order")]


# ----------------------------------------------------------------------------- events

class IngestedEvent(_Model, kw_only=True, tag_field="schema", tag="ocr.ingested.v1"):
    """``ocr.ingested.v1``: a document's original bytes are in the bucket (claim check)."""

    document_id: NonEmpty
    document: DocumentRef
    timestamps: Timestamps
    costs: Costs | UnsetType = UNSET


class RegionsEvent(_Model, kw_only=True, tag_field="schema", tag="ocr.regions.v1"):
    """``ocr.regions.v1``: text regions cropped from a document's pages."""

    document_id: NonEmpty
    document: DocumentRef
    timestamps: Timestamps
    pages: list[Page]
    regions: list[Region]
    costs: Costs | UnsetType = UNSET


class RecognizedEvent(_Model, kw_only=True, tag_field="schema", tag="ocr.recognized.v1"):
    """``ocr.recognized.v1``: text recognised in each region."""

    document_id: NonEmpty
    document: DocumentRef
    timestamps: Timestamps
    pages: list[Page]
    recognizer: Recognizer
    regions: list[RecognizedRegion]
    costs: Costs | UnsetType = UNSET


class ResultsEvent(_Model, kw_only=True, tag_field="schema", tag="ocr.results.v1"):
    """``ocr.results.v1``: a document's final outcome, its text and regions, or why it failed.

    ``text`` is the full text in reading order (a line's regions joined by a space, lines by
    newline, pages by form feed). ``needs_review``, ``fields``, ``recognizer`` (with its
    ``model``), ``result_version`` and ``previous_version`` are set for done documents.
    """

    version: Annotated[Literal[1], Meta(description="contract version; v1 only ever grows by optional fields")]
    document_id: NonEmpty
    status: Literal["done", "failed"]
    timestamps: Timestamps
    text: Annotated[str, Meta(description="full text in reading order: visual lines joined by newlines, "
                                          "pages by form feed")]
    pages: list[Page]
    regions: list[ResultRegion]
    error: ErrorInfo | None
    document: DocumentRef | UnsetType = UNSET
    needs_review: Annotated[bool, Meta(description="some region has low confidence or failed validation, or a "
                                                   "page has ink but no text")] \
        | UnsetType = UNSET
    fields: Annotated[dict[str, FieldResult], Meta(description="template fields, or receipt fields found without "
                                                               "a template, by name: {value, text, valid, ...}")] \
        | UnsetType = UNSET
    recognizer: Recognizer | UnsetType = UNSET
    result_version: Annotated[int, Meta(ge=1, description="the document's result version (1, 2, ... each time it "
                                                          "is read again: ocrstream reprocess)")] | UnsetType = UNSET
    previous_version: Annotated[int | None, Meta(description="the result version this one replaces (kept), null "
                                                             "for the first")] | UnsetType = UNSET
    costs: Costs | UnsetType = UNSET


class DeadLetterEvent(_Model, kw_only=True, tag_field="schema", tag="ocr.dlq.v1"):
    """``ocr.dlq.v1``: a message a stage could not process (dead letter). ``original`` is the
    input event when it was JSON (never pixels); raw bytes are only counted."""

    document_id: NonEmpty
    stage: str
    error: ErrorInfo
    source: Source
    original: Annotated[dict[str, Any] | None, Meta(description="the input event when it was JSON; never pixels")]
    original_size_bytes: Index | UnsetType = UNSET
    failed_at: DateTime


AnyEvent = IngestedEvent | RegionsEvent | RecognizedEvent | ResultsEvent | DeadLetterEvent

#: The model of each JSON topic (``ocr.raw.v1`` carries bytes and has none).
MODELS: dict[str, type[AnyEvent]] = {
    m.__struct_config__.tag: m  # type: ignore[misc]
    for m in (IngestedEvent, RegionsEvent, RecognizedEvent, ResultsEvent, DeadLetterEvent)
}


def topic_of(model: type[Struct] | Struct) -> str:
    """The topic (= ``schema`` tag) of an event model or event, e.g. ``"ocr.regions.v1"``."""
    tag = model.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{model!r} is not an event model")
    return tag



#: Decimal places kept of each per-character probability on the wire (``char_probs``).
PROB_DECIMALS = 2


def compact_probs(probs: Iterable[float]) -> list[float]:
    """Per-character probabilities for the wire: each rounded *down* to :data:`PROB_DECIMALS`
    decimals, and exact 0 and 1 written as the integers ``0``/``1`` (``"1"`` not ``"1.0"``).

    Rounding down keeps every comparison ``p < t`` for a threshold ``t`` on the 0.01 grid
    exactly as on the unrounded value (the store's ``protect_prob`` 0.9, ``review_threshold``
    0.98), which rounding to nearest does not (0.8996 -> 0.9). ~2 bytes per character saved.
    """
    scale = 10 ** PROB_DECIMALS
    out: list[float] = []
    for p in probs:
        q = math.floor(min(max(float(p), 0.0), 1.0) * scale + 1e-6) / scale
        out.append(int(q) if q in (0.0, 1.0) else q)
    return out

"""Event contracts on the wire: topic names, JSON encoding and validation of the typed models.

Every event is a UTF-8 JSON object whose ``schema`` field names its topic and version and whose
Kafka key is the ``document_id`` (so one document stays on one partition, in order).
Events carry object keys, never pixels (claim check). The models are in
:mod:`ocrstream.contracts.event_models` (msgspec structs); the JSON Schemas in ``schemas/`` are
generated from them. Decoding validates every constraint (msgspec, ~1-3 ms for a 2,000-region
event: ``bench/bench_events.py``); it still runs on a stage's handler loop, never the Kafka loop.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Final, Literal, overload

import msgspec

from ocrstream.contracts.event_models import (
    MODELS,
    AnyEvent,
    DeadLetterEvent,
    IngestedEvent,
    RecognizedEvent,
    RegionsEvent,
    ResultsEvent,
    topic_of,
)
from ocrstream.errors import InvalidEventError

RAW: Final = "ocr.raw.v1"  # image bytes in the message value (for producers that drop images into Kafka)
INGESTED: Final = "ocr.ingested.v1"
REGIONS: Final = "ocr.regions.v1"
RECOGNIZED: Final = "ocr.recognized.v1"
RESULTS: Final = "ocr.results.v1"
DLQ: Final = "ocr.dlq.v1"
ALL_TOPICS = (RAW, INGESTED, REGIONS, RECOGNIZED, RESULTS, DLQ)
#: Any typed event (one model per JSON topic).
Event = AnyEvent
#: A JSON object as plain builtins (a dead letter's ``original``, an unknown event).
JSONObject = dict[str, Any]

#: One decoder for every JSON topic: the ``schema`` tag picks the model (and must be present).
_DECODER = msgspec.json.Decoder(AnyEvent)
_ENCODER = msgspec.json.Encoder()
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds, e.g. ``2026-11-21T23:42:05.123+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _invalid(topic: str, exc: msgspec.ValidationError) -> InvalidEventError:
    """Our typed error for a msgspec validation error, with the bad field's path
    (``regions/3/page_index``; ``<root>`` for the object itself)."""
    m = _AT.match(str(exc))
    message, path = (m["message"], m["path"] or "") if m else (str(exc), "")
    where = "/".join(p for p in re.split(r"[.\[\]]+", path) if p) or "<root>"
    return InvalidEventError(f"{topic} event invalid at {where}: {message}")


@overload
def decode(topic: Literal["ocr.ingested.v1"], value: bytes | None) -> IngestedEvent: ...
@overload
def decode(topic: Literal["ocr.regions.v1"], value: bytes | None) -> RegionsEvent: ...
@overload
def decode(topic: Literal["ocr.recognized.v1"], value: bytes | None) -> RecognizedEvent: ...
@overload
def decode(topic: Literal["ocr.results.v1"], value: bytes | None) -> ResultsEvent: ...
@overload
def decode(topic: Literal["ocr.dlq.v1"], value: bytes | None) -> DeadLetterEvent: ...
@overload
def decode(topic: str, value: bytes | None) -> AnyEvent: ...
def decode(topic: str, value: bytes | None) -> AnyEvent:
    """Parse and validate a message value from ``topic`` into its model; raises
    InvalidEventError (not JSON, not an object, or a field that breaks the contract, by path)."""
    model = MODELS.get(topic)
    if model is None:
        raise InvalidEventError(f"{topic} has no JSON event model")
    try:
        event: AnyEvent = _DECODER.decode(value or b"")
    except msgspec.ValidationError as exc:
        raise _invalid(topic, exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidEventError(f"{topic} message is not JSON: {exc}") from None
    if not isinstance(event, model):
        raise InvalidEventError(f"{topic} event invalid at schema: {topic_of(event)!r} is another topic's event")
    return event


def encode(topic: str, event: AnyEvent) -> bytes:
    """Serialise an event for ``topic`` as compact UTF-8 JSON, checked against its model (the
    bytes are decoded once more: constraints are only checked on decode); raises InvalidEventError."""
    if topic_of(event) != topic:
        raise InvalidEventError(f"{topic} event expected, got a {topic_of(event)} event")
    try:
        data = _ENCODER.encode(event)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEventError(f"{topic} event cannot be encoded: {exc}") from None
    decode(topic, data)
    return data


def from_json_object(topic: str, obj: JSONObject) -> AnyEvent:
    """An event of ``topic`` given as builtins (e.g. ``json.loads`` output, a test's dict),
    validated like :func:`decode`; raises InvalidEventError."""
    model = MODELS.get(topic)
    if model is None:
        raise InvalidEventError(f"{topic} has no JSON event model")
    try:
        event: AnyEvent = msgspec.convert(obj, AnyEvent)
    except msgspec.ValidationError as exc:
        raise _invalid(topic, exc) from None
    if not isinstance(event, model):
        raise InvalidEventError(f"{topic} event invalid at schema: {topic_of(event)!r} is another topic's event")
    return event


def convert(model: Any, obj: Any, topic: str | None = None) -> Any:
    """``obj`` (builtins: dicts, lists, ...) as ``model`` (a model or a type of models, e.g.
    ``list[Page]``), validated; raises InvalidEventError (``topic`` names it in the message).
    For parts built as dicts by shared code (e.g. a region from the preprocess worker)."""
    try:
        return msgspec.convert(obj, model)
    except msgspec.ValidationError as exc:
        raise _invalid(topic or model.__name__, exc) from None


def to_json_object(event: msgspec.Struct) -> JSONObject:
    """An event (or part) as plain builtins (unset fields left out), e.g. for printing."""
    out: JSONObject = msgspec.to_builtins(event)
    return out


def try_json(value: bytes | None) -> JSONObject | None:
    """The message value as a JSON object, or None if it is not one (e.g. raw image bytes)."""
    try:
        event = json.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) else None

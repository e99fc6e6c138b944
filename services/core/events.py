"""Event contracts on the wire: topic names, JSON encoding and schema validation.

Every event is a UTF-8 JSON object whose ``schema`` field names its topic and version and whose
Kafka key is the ``document_id`` (so one document stays on one partition, in order).
Events carry object keys, never pixels (claim check). Schemas live in ``schemas/``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from jsonschema.exceptions import ValidationError

import schemas

from .errors import InvalidEventError

RAW = "ocr.raw.v1"  # image bytes in the message value (for producers that drop images into Kafka)
INGESTED = "ocr.ingested.v1"
REGIONS = "ocr.regions.v1"
RECOGNIZED = "ocr.recognized.v1"
RESULTS = "ocr.results.v1"
DLQ = "ocr.dlq.v1"
ALL_TOPICS = (RAW, INGESTED, REGIONS, RECOGNIZED, RESULTS, DLQ)

Event = dict[str, Any]


def now_iso() -> str:
    """Current UTC time as ISO 8601 with milliseconds, e.g. ``2026-11-21T23:42:05.123+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def validate(topic: str, event: Event) -> Event:
    """Check ``event`` against ``topic``'s JSON Schema; returns it or raises InvalidEventError."""
    try:
        schemas.validator(topic).validate(event)
    except ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "<root>"
        raise InvalidEventError(f"{topic} event invalid at {path}: {exc.message}") from None
    return event


def encode(topic: str, event: Event) -> bytes:
    """Validate and serialise an event for ``topic`` (compact UTF-8 JSON)."""
    return json.dumps(validate(topic, event), separators=(",", ":"), ensure_ascii=False).encode()


def decode(topic: str, value: bytes | None) -> Event:
    """Parse and validate a message value from ``topic``; raises InvalidEventError."""
    try:
        event = json.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEventError(f"{topic} message is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise InvalidEventError(f"{topic} message is not a JSON object")
    return validate(topic, event)


def try_json(value: bytes | None) -> Event | None:
    """The message value as a JSON object, or None if it is not one (e.g. raw image bytes)."""
    try:
        event = json.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) else None

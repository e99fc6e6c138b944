"""The typed event models (ocrstream/contracts/event_models.py) and the JSON Schemas generated from them.

Golden events (tests/golden_events/<topic>.<name>.json) are events as the previous version's
producers wrote them, each valid against the hand-written v1 schemas: the compatibility rule
says every later model must still decode them. Fast: no stack.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

import schemas
from ocrstream.contracts import events
from ocrstream.contracts.event_models import (
    MODELS,
    DocumentRef,
    ErrorInfo,
    IngestedEvent,
    RecognizedRegion,
    ResultsEvent,
    Timestamps,
    compact_probs,
)
from ocrstream.errors import InvalidEventError
from schemas.generate import generate

GOLDEN = sorted((Path(__file__).resolve().parents[1] / "golden_events").glob("*.json"))
#: Golden events written by today's producers' code paths: decode -> encode gives the same bytes.
BYTE_EXACT = {"ocr.dlq.v1.kafka", "ocr.dlq.v1.http-no-original", "ocr.ingested.v1.cli", "ocr.ingested.v1.raw-minimal",
              "ocr.regions.v1.detected-and-template", "ocr.recognized.v1.full", "ocr.results.v1.done",
              "ocr.results.v1.failed", "ocr.results.v1.minimal-region"}


def topic_of_file(path: Path) -> str:
    return ".".join(path.name.split(".")[:3])


def test_committed_schemas_are_the_generated_ones():
    for path, text in generate().items():
        assert path.exists(), f"{path.name} missing: run python -m schemas.generate"
        assert path.read_text("utf-8") == text, f"{path.name} differs from the models: run python -m schemas.generate"


def test_every_json_topic_has_a_model_and_golden_events():
    assert set(MODELS) == set(events.ALL_TOPICS) - {events.RAW}
    assert {topic_of_file(p) for p in GOLDEN} == set(MODELS)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_events_decode_and_validate_against_the_generated_schema(path):
    topic, raw = topic_of_file(path), path.read_bytes().strip()
    event = events.decode(topic, raw)
    assert isinstance(event, MODELS[topic])
    schemas.validator(topic).validate(json.loads(raw))  # the generated schema agrees
    again = events.encode(topic, event)
    assert events.decode(topic, again) == event
    if path.stem in BYTE_EXACT:
        assert again == raw


def test_unknown_fields_are_ignored():
    path = next(p for p in GOLDEN if p.stem == "ocr.ingested.v1.raw-external-id")
    event = events.decode(events.INGESTED, path.read_bytes())
    assert event.document.external_id == "prod-key-1"
    assert b"unknown_future_field" not in events.encode(events.INGESTED, event)


def _golden(stem: str) -> dict:
    return json.loads(next(p for p in GOLDEN if p.stem == stem).read_text())


def _set(event: dict, path: str, value) -> dict:
    event = copy.deepcopy(event)
    *parents, last = path.split("/")
    target = event
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return event


# (golden event, field path, bad value or KeyError for "removed"): each broke the v1 schema and
# must break the model, with the same path in the error.
BAD = [
    ("ocr.ingested.v1.cli", "document_id", ""),
    ("ocr.ingested.v1.cli", "document/content_sha256", "ABC"),
    ("ocr.ingested.v1.cli", "document/size_bytes", -1),
    ("ocr.ingested.v1.cli", "document/source", "ftp"),
    ("ocr.ingested.v1.cli", "timestamps/ingested", KeyError),
    ("ocr.ingested.v1.cli", "schema", "ocr.ingested.v2"),
    ("ocr.regions.v1.detected-and-template", "regions/0/crop_key", KeyError),
    ("ocr.regions.v1.detected-and-template", "regions/0/box", [1, 2, 3]),
    ("ocr.regions.v1.detected-and-template", "regions/1/quad", [[1, 2]] * 5),
    ("ocr.regions.v1.detected-and-template", "regions/1/field/type", "money"),
    ("ocr.regions.v1.detected-and-template", "pages/0/width", 0),
    ("ocr.regions.v1.detected-and-template", "regions/0/line_index", -2),
    ("ocr.recognized.v1.full", "regions/0/confidence", 1.5),
    ("ocr.recognized.v1.full", "regions/0/char_probs/3", -0.1),
    ("ocr.recognized.v1.full", "regions/0/words/1/box", "x"),
    ("ocr.recognized.v1.full", "recognizer/provider", KeyError),
    ("ocr.results.v1.done", "version", 2),
    ("ocr.results.v1.done", "status", "pending"),
    ("ocr.results.v1.done", "error", KeyError),
    ("ocr.results.v1.done", "regions/1/valid", "yes"),
    ("ocr.results.v1.failed", "error/message", KeyError),
    ("ocr.dlq.v1.kafka", "original", "text"),
    ("ocr.dlq.v1.kafka", "source/offset", "17"),
    ("ocr.dlq.v1.kafka", "original_size_bytes", -5),
]


@pytest.mark.parametrize("stem,path,value", BAD, ids=[f"{s}:{p}" for s, p, _ in BAD])
def test_what_the_schema_rejects_the_model_rejects_with_its_path(stem, path, value):
    topic = ".".join(stem.split(".")[:3])
    bad = _set(_golden(stem), path, value)
    with pytest.raises(jsonschema.ValidationError):
        schemas.validator(topic).validate(bad)
    with pytest.raises(InvalidEventError) as err:
        events.decode(topic, json.dumps(bad).encode())
    where = path.rsplit("/", 1)[0] if value is KeyError else path
    assert f"invalid at {where if value is not KeyError or '/' in path else '<root>'}" in str(err.value)


@pytest.mark.parametrize("value", [b"", b"\xff", b"[1]", b'"x"', b"{"])
def test_not_an_event_object(value):
    with pytest.raises(InvalidEventError):
        events.decode(events.RESULTS, value)


def test_wrong_topic_is_refused_both_ways():
    raw = next(p for p in GOLDEN if p.stem == "ocr.ingested.v1.cli").read_bytes()
    with pytest.raises(InvalidEventError, match="another topic"):
        events.decode(events.REGIONS, raw)
    with pytest.raises(InvalidEventError):
        events.encode(events.REGIONS, events.decode(events.INGESTED, raw))


def test_encode_checks_constraints_of_built_events():
    doc = DocumentRef(object_key="k", content_sha256="0" * 64, size_bytes=1, source="cli")
    good = IngestedEvent(document_id="d", document=doc, timestamps=Timestamps(ingested=events.now_iso()))
    assert events.decode(events.INGESTED, events.encode(events.INGESTED, good)) == good
    with pytest.raises(InvalidEventError, match="document/size_bytes"):
        events.encode(events.INGESTED, IngestedEvent(document_id="d", document=DocumentRef(
            object_key="k", content_sha256="0" * 64, size_bytes=-1, source="cli"), timestamps=good.timestamps))
    failed = ResultsEvent(version=1, document_id="d", status="failed", timestamps=good.timestamps, text="",
                          pages=[], regions=[], error=ErrorInfo(stage="s", type="T", message="m"))
    assert events.encode(events.RESULTS, failed).startswith(b'{"schema":"ocr.results.v1","version":1,')
    region = RecognizedRegion(region_id="r", page_index=0, crop_key="k", line_index=0, order=0, box=[0, 0, 1, 1],
                              text="ab", confidence=2.0)
    with pytest.raises(InvalidEventError, match="confidence"):
        events.convert(RecognizedRegion, events.to_json_object(region))


def test_compact_probs_round_down_keeps_threshold_decisions_on_the_001_grid():
    probs = [0.0, 0.8996, 0.9, 0.90001, 0.97999, 0.98, 0.999, 1.0, 0.29, 0.57]
    out = compact_probs(probs)
    assert out == [0, 0.89, 0.9, 0.9, 0.97, 0.98, 0.99, 1, 0.29, 0.57]
    assert [type(v) for v in out[:1]] == [int] and type(out[7]) is int
    for t in (0.9, 0.98, 0.5):
        assert [p < t for p in probs] == [p < t for p in out]
    assert json.dumps(out, separators=(",", ":")) == "[0,0.89,0.9,0.9,0.97,0.98,0.99,1,0.29,0.57]"


def test_generated_descriptions_do_not_depend_on_docstring_indentation():
    """Every description is one line with single spaces, whatever msgspec does with docstrings."""
    def descriptions(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "description" and isinstance(value, str):
                    yield value
                else:
                    yield from descriptions(value)
        elif isinstance(node, list):
            for item in node:
                yield from descriptions(item)

    found = [d for path, text in generate().items() for d in descriptions(json.loads(text))]
    assert len(found) > 20
    assert all(d == " ".join(d.split()) for d in found)

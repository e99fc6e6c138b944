"""Units of the operability code: latency metrics from event timestamps (ocrstream/streaming/metrics.py)
and the readiness rules (ocrstream/streaming/health.py)."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DeadLetterEvent, DocumentRef, ErrorInfo, ResultsEvent, Source, Timestamps
from ocrstream.settings import Settings
from ocrstream.streaming import health, metrics
from ocrstream.streaming.stage import Output


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def result(status: str, door: str, **timestamps: str) -> Output:
    event = ResultsEvent(version=1, document_id="d", status=status, timestamps=Timestamps(**timestamps), text="",
                         pages=[], regions=[], error=None,
                         document=DocumentRef(object_key="k", content_sha256="0" * 64, size_bytes=1, source=door))
    return Output(events.RESULTS, "d", event)


def test_end_to_end_and_time_in_stage_from_event_timestamps():
    e2e_sum = value("ocrstream_end_to_end_seconds_sum", status="done", door="http")
    e2e_count = value("ocrstream_end_to_end_seconds_count", status="done", door="http")
    store_sum = value("ocrstream_stage_seconds_sum", stage="store")
    metrics.observe_outputs("store", [result(
        "done", "http", submitted="2026-11-23T10:00:00.000+00:00", ingested="2026-11-23T10:00:00.500+00:00",
        preprocessed="2026-11-23T10:00:04.000+00:00", recognized="2026-11-23T10:00:10.500+00:00",
        stored="2026-11-23T10:00:12.500+00:00")])
    assert value("ocrstream_end_to_end_seconds_sum", status="done", door="http") - e2e_sum == 12.5
    assert value("ocrstream_end_to_end_seconds_count", status="done", door="http") - e2e_count == 1
    assert value("ocrstream_stage_seconds_sum", stage="store") - store_sum == 2.0  # stored - recognized


def test_failed_result_times_the_store_from_the_dead_letter():
    store_sum = value("ocrstream_stage_seconds_sum", stage="store")
    failed_sum = value("ocrstream_end_to_end_seconds_sum", status="failed", door="cli")
    metrics.observe_outputs("store", [result(
        "failed", "cli", submitted="2026-11-23T10:00:00+00:00", ingested="2026-11-23T10:00:01+00:00",
        failed="2026-11-23T10:00:03+00:00", stored="2026-11-23T10:00:03.250+00:00")])
    assert value("ocrstream_stage_seconds_sum", stage="store") - store_sum == 0.25
    assert value("ocrstream_end_to_end_seconds_sum", status="failed", door="cli") - failed_sum == 3.25


def test_outputs_without_timestamps_are_skipped():
    count = value("ocrstream_stage_seconds_count", stage="preprocess")
    dead = DeadLetterEvent(document_id="d", stage="preprocess", error=ErrorInfo(stage="preprocess", type="T", message="m"),
                           source=Source(topic="http"), original=None, failed_at=events.now_iso())
    metrics.observe_outputs("preprocess", [Output(events.DLQ, "d", dead)])
    assert value("ocrstream_stage_seconds_count", stage="preprocess") == count


def test_readiness_needs_a_recent_poll_and_no_endless_retries():
    state = health.Health()
    state.configure("recognize", Settings(health_max_poll_age_s=30, health_max_retry_s=60))
    state.checks = {name: health.Check(True, "ok") for name in state.needs}
    assert state.readiness()[0] is False  # never polled
    state.mark_poll()
    assert state.readiness()[0] is True
    state.last_poll = time.time() - 31
    ready, report = state.readiness()
    assert not ready and not report["poll"]["ok"]
    state.mark_poll()

    metrics.RETRIES.labels("recognize", "ConnectionError").inc()
    state._track_retries()  # retries grew, no commit: retrying since now
    assert state.readiness()[0] is True
    state.retrying_since -= 61
    ready, report = state.readiness()
    assert not ready and "retrying without a commit" in report["retries"]["detail"]
    metrics.RETRIES.labels("recognize", "ConnectionError").inc()
    metrics.mark_commit("recognize")
    state._track_retries()  # a commit happened: progress
    assert state.readiness()[0] is True


def test_the_query_api_is_ready_when_postgres_answers():
    """`ocrstream run api` has no Kafka loop: readiness is its PostgreSQL probe alone."""
    state = health.Health()
    state.configure("api", Settings())
    assert state.needs == ("postgres",)
    assert state.readiness() == (False, {"postgres": {"ok": False, "detail": "not checked yet"}})
    state.checks["postgres"] = health.Check(True, "SELECT 1 ok")
    assert state.readiness() == (True, {"postgres": {"ok": True, "detail": "SELECT 1 ok"}})

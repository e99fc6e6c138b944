"""Prometheus metrics of a stage (prometheus-client), all labelled by ``stage``.

Served on the stage's own port (``Settings.metrics_port_for``) at ``/metrics``; the Grafana
dashboard in ``deploy/`` plots rate, latency, errors and consumer lag per stage from these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_IN = Counter("ocrstream_messages_in_total", "Messages consumed", ["stage", "topic"])
MESSAGES_OUT = Counter("ocrstream_messages_out_total", "Messages produced", ["stage", "topic"])
MESSAGES_FAILED = Counter(
    "ocrstream_messages_failed_total", "Messages dead-lettered", ["stage", "error_type"]
)
RETRIES = Counter("ocrstream_retries_total", "Retries of transient faults", ["stage", "error_type"])
PROCESSING_SECONDS = Histogram(
    "ocrstream_processing_seconds",
    "Wall seconds to handle one polled micro-batch of messages",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
BATCH_SIZE = Histogram(
    "ocrstream_batch_messages", "Messages per polled micro-batch", ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
CONSUMER_LAG = Gauge(
    "ocrstream_consumer_lag", "Fetch highwater minus position", ["stage", "topic", "partition"]
)
REJECTED = Counter(
    "ocrstream_rejected_total", "Submissions refused at a door (no document made)", ["stage", "door", "reason"]
)
INGESTED_BYTES = Counter("ocrstream_ingested_bytes_total", "Bytes of documents accepted, per door", ["door"])
DEAD_LETTERS_PARKED = Counter(
    "ocrstream_dead_letters_parked_total",
    "Dead letters the store could not record as failed rows, parked in PostgreSQL table parked_events",
    ["stage"],
)
LOOP_LAG = Gauge(
    "ocrstream_event_loop_lag_seconds",
    "How late the stage's Kafka event loop last woke up (CPU work on the loop shows here)", ["stage"],
)
STAGE_INFO = Gauge("ocrstream_stage_info", "Static facts of a stage (value 1)", ["stage", "key", "value"])


def serve(port: int) -> None:
    """Start the /metrics HTTP endpoint on ``port`` (no-op for 0)."""
    if port:
        start_http_server(port, addr="0.0.0.0")

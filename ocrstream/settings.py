"""Configuration of every ocrstream process, read once from the environment.

Every field is an environment variable with the ``OCRSTREAM_`` prefix (``kafka_bootstrap`` ->
``OCRSTREAM_KAFKA_BOOTSTRAP``). Values missing from the environment are read from the
dotenv file that ``ocrstream dev up`` writes (``.ocrstream/dev/stack.env``, or the path in
``OCRSTREAM_ENV_FILE``); real environment variables always win. Settings are frozen
(as in quixstreams' settings objects): a process never changes its configuration.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ocrstream.errors import ConfigurationError

DEV_ENV_FILE = Path(".ocrstream/dev/stack.env")

# Default Prometheus port per stage (0 disables the metrics endpoint).
DEFAULT_METRICS_PORTS = {"ingest": 9101, "preprocess": 9102, "recognize": 9103, "store": 9104, "api": 9105}


class Settings(BaseSettings):
    """All knobs of the pipeline. Units are in the field names (``_ms``, ``_bytes``, ``_s``)."""

    model_config = SettingsConfigDict(env_prefix="OCRSTREAM_", frozen=True, extra="ignore")

    # Kafka (security: ocrstream/streaming/kafka.py)
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_cafile: str | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_request_timeout_ms: int = 30_000
    kafka_idempotent_producer: bool = True  # the embedded broker cannot: dev up sets false
    # Longest a fetch waits on the broker for data to arrive (aiokafka default 500). Each hop of a
    # document pays part of it at low load: measured on tansu, produce-ack -> consumed median 102 ms
    # at 500, 23 ms at 200, 10 ms at 100, for ~0.01 CPU-s/s more per idle consumer (broker + client).
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=1, le=10_000)
    topic_partitions: int = 4
    topic_replication_factor: int = 1
    consumer_group_prefix: str = "ocrstream"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    # Static group membership (KIP-345): a stable id per stage process (e.g. the pod name). A
    # process restarted with its id within session_timeout_ms takes its partitions back without
    # a rebalance (bench/bench_takeover.py); a stopped one is not replaced before the timeout.
    group_instance_id: str | None = None
    max_message_bytes: int = 16 * 1024 * 1024
    poll_max_records: int = 16

    # Object store (S3 API: MinIO, SeaweedFS, AWS S3)
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "minioadmin"
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    s3_secure: bool = False  # TLS to S3 (production); the CA bundle from SSL_CERT_FILE / certifi
    s3_timeout_s: float = 10.0  # connect and read timeout of one S3 request
    s3_region: str = "us-east-1"
    s3_bucket: str = "ocrstream"

    # PostgreSQL (TLS in production: ?sslmode=verify-full&sslrootcert=... in the DSN)
    postgres_dsn: SecretStr = SecretStr("postgresql://ocrstream:ocrstream@127.0.0.1:5432/ocrstream")
    postgres_timeout_s: float = 10.0  # connect and per-statement timeout

    # Retries of transient faults (broker, S3, database down): exponential backoff with full
    # jitter, at most retry_max_attempts per record, then a dead letter (RetriesExhaustedError).
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    retry_max_attempts: int = 30  # ~12 min of backoff at the defaults
    # Poison-message isolation: a record whose handling crashed, hung or OOM-killed the process
    # this many times is dead-lettered (PoisonMessageError) and the partition moves on.
    max_delivery_attempts: int = 3
    record_timeout_s: float = 600.0  # wall time to handle one record (a batch gets n times this): a 200-page PDF fits
    shutdown_grace_s: float = 10.0  # on SIGTERM, time for the batch in hand to finish

    # Ingest
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    max_document_bytes: int = 64 * 1024 * 1024
    # HTTP doors (ingest and query API): API keys (ocrstream/streaming/auth.py), required whenever a
    # door binds beyond loopback; requests per minute per key (0 = unlimited).
    api_keys_file: str | None = None
    require_api_key: bool = False
    rate_limit_per_minute: int = 600
    # How long the ingest door remembers an Idempotency-Key's answer (services/ingest/idempotency.py).
    idempotency_ttl_s: float = Field(24 * 3600.0, gt=0)
    # Clients (`ocrstream submit`, ocrstream/client/http_submit.py): the ingest HTTP door's URL (None: the
    # stage's own http_host/http_port) and the API key they send to the HTTP doors.
    ingest_url: str | None = None
    api_key: SecretStr | None = None
    # Re-submitted bytes (same sha256 and template) already done: process again, or reuse the
    # earlier document (its id is returned, nothing is reprocessed).
    duplicates: Literal["reprocess", "reuse"] = "reprocess"
    # The bucket door (services/ingest/bucket.py): S3 event notifications of objects dropped
    # under s3://<inbox_bucket or s3_bucket>/<inbox_prefix>; an empty topic turns it off.
    bucket_notifications_topic: str = "ocr.bucket-notifications"
    inbox_bucket: str | None = None
    inbox_prefix: str = "inbox/"
    seaweedfs_buckets_dir: str = "/buckets"  # the filer folder holding S3 buckets (SeaweedFS events)

    # Preprocess: the budget of one document, checked before the work is done
    max_image_pixels: int = 80_000_000  # one page or frame (A3 at 600 dpi is 70 Mpx)
    max_document_pixels: int = 800_000_000  # all pages and frames together (200 A4 pages at 200 dpi)
    max_pages: int = 200
    decode_memory_bytes: int = 2 * 1024**3  # address-space limit of the isolated decoder process
    decode_timeout_s: float = 60.0  # wall time of decoding + detecting one page
    decode_workers: int = 1  # isolated decoder processes (services/preprocess/worker.py)
    decode_worker_max_tasks: int = 100  # a decoder process is replaced after this many pages
    pdf_dpi: int = 200
    detect_max_side: int = 1536  # bench_pages: 2048 costs ~90 CPU-ms more per page for no CER gain
    cleanup_steps: str = "border"  # comma list of preprocess/cleanup.py STEPS, "" = off; bench_pages --ablation
    templates_dir: str | None = None  # extra fixed-layout templates (*.yaml), beside the shipped ones

    # Query API port (served by `ocrstream run api`; 0 = off) and post-processing (ocrstream/ocr/postprocess/)
    query_port: int = 8081
    postprocess_rules: str = "nfkc,whitespace,confusables,dictionary"  # comma-separated; "" = off
    review_threshold: float = 0.98  # regions below this confidence get needs_review

    # Recognize
    recognizer: str = "ppocr"
    # A fine-tuned PP-OCR model: its manifest.json (or folder) from `ocrstream model finetune`;
    # the model file's sha256 is checked at load. None = the shipped PP-OCRv6 model.
    ppocr_model: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    batch_max_size: int = 32
    batch_max_wait_ms: int = 20
    max_region_chars: int = 1000  # characters kept per region (longer readings are cut)

    # Metrics: None -> the stage's default port from DEFAULT_METRICS_PORTS, 0 -> off.
    # The same port serves /healthz and /readyz (ocrstream/streaming/health.py).
    metrics_port: int | None = None
    lag_refresh_s: float = 5.0  # ocrstream_consumer_lag refresh period
    health_probe_interval_s: float = 5.0  # Kafka/S3/PostgreSQL readiness probes
    health_probe_timeout_s: float = 3.0
    health_max_poll_age_s: float = 30.0  # not ready when the loop has not polled for longer
    health_max_retry_s: float = 60.0  # not ready when retrying without a commit for longer
    # Crash-only: a stage (or the query API) whose dependencies stay unreachable for longer exits
    # with status 3, so its supervisor restarts it with fresh settings (0 = never).
    dependency_exit_s: float = Field(120.0, ge=0)
    # `ocrstream lag-exporter` (ocrstream/streaming/lag.py): consumer-group lag from outside the stages
    lag_exporter_port: int = 9108
    lag_exporter_interval_s: float = 15.0

    # Crop transport preprocess -> recognize: one object per page (ocrstream/storage/crops.py)
    crop_codec: Literal["none", "zlib"] = "none"  # zlib level 1: +36 CPU-ms per page for 1.8 -> 0.56 MB (issue 13)
    max_page_crop_bytes: int = 128 * 1024**2  # pixel bytes of one page's crops (h * w * 3 summed)

    # Query API process (`ocrstream run api`, services/store/api.py; port: query_port above):
    # its own read-only pool (ocrstream/storage/db.py create_read_pool). api_postgres_dsn: a login
    # role that is a member of ocrstream_read; None = the store's DSN with that role set at connect.
    api_postgres_dsn: SecretStr | None = None
    api_pool_size: int = 4

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir_exists(cls, value: str | None) -> str | None:
        if value and not Path(value).is_dir():
            raise ValueError(f"OCRSTREAM_TEMPLATES_DIR={value} is not a directory")
        return value

    @property
    def dsn(self) -> str:
        """The PostgreSQL DSN (secret) as a plain string, for the client only."""
        return self.postgres_dsn.get_secret_value()

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        """Settings from an ``OCRSTREAM_*`` mapping (e.g. a child process's env), not os.environ."""
        values: dict[str, Any] = {k.removeprefix("OCRSTREAM_").lower(): v for k, v in env.items()
                  if k.startswith("OCRSTREAM_") and k != "OCRSTREAM_ENV_FILE"}
        return cls(**{k: v for k, v in values.items() if k in cls.model_fields})

    def metrics_port_for(self, stage: str) -> int:
        """Prometheus port for ``stage`` (0 means: do not serve metrics)."""
        return DEFAULT_METRICS_PORTS[stage] if self.metrics_port is None else self.metrics_port


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings: environment first, then the dev stack's dotenv file if present."""
    env_file = Path(os.environ.get("OCRSTREAM_ENV_FILE", DEV_ENV_FILE))
    try:
        return Settings(_env_file=env_file if env_file.is_file() else None)
    except ValueError as exc:  # pydantic's ValidationError: name every bad variable
        raise ConfigurationError(f"invalid configuration: {exc}") from None

"""Configuration of every ocrstream process, read once from the environment.

Every field is an environment variable with the ``OCRSTREAM_`` prefix (``kafka_bootstrap`` ->
``OCRSTREAM_KAFKA_BOOTSTRAP``). Values missing from the environment are read from the
dotenv file that ``ocrstream dev up`` writes (:func:`ocrstream.environment.env_file_path`: ``OCRSTREAM_ENV_FILE``, else
``.ocrstream/dev/stack.env`` under the current directory, else the file the last ``dev up`` recorded
in the user's state dir, so any directory finds the stack); real environment variables always win. Settings are frozen
(as in quixstreams' settings objects): a process never changes its configuration.
"""

from __future__ import annotations

import functools
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ocrstream.environment import (
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_DOCUMENT_BYTES,
    DEFAULT_S3_BUCKET,
    env_file_path,
)
from ocrstream.errors import ConfigurationError


def _setting(group: str, default: Any, description: str, **constraints: Any) -> Any:
    """A settings field: its default, what it does (units in the name or here) and its group."""
    return Field(default, description=description, json_schema_extra={"group": group}, **constraints)


#: The groups of :class:`Settings`, in the order ``ocrstream settings`` prints them.
GROUPS = ("Kafka", "Object store", "PostgreSQL", "Delivery", "Doors", "Limits", "OCR", "Models",
          "Observability", "HTTP APIs")


_kafka = functools.partial(_setting, "Kafka")
_s3 = functools.partial(_setting, "Object store")
_pg = functools.partial(_setting, "PostgreSQL")
_delivery = functools.partial(_setting, "Delivery")
_doors = functools.partial(_setting, "Doors")
_limits = functools.partial(_setting, "Limits")
_ocr = functools.partial(_setting, "OCR")
_models = functools.partial(_setting, "Models")
_obs = functools.partial(_setting, "Observability")
_http = functools.partial(_setting, "HTTP APIs")


class Settings(BaseSettings):
    """All knobs of the pipeline, grouped by concern (:data:`GROUPS`; ``ocrstream settings`` lists them
    with their descriptions and values). Units are in the field names (``_ms``, ``_bytes``, ``_s``)."""

    model_config = SettingsConfigDict(env_prefix="OCRSTREAM_", frozen=True, extra="ignore")

    # Kafka (security: ocrstream/streaming/kafka.py)
    kafka_bootstrap: str = _kafka("127.0.0.1:9092", "bootstrap servers, host:port[,host:port...]")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _kafka(
        "PLAINTEXT", "TLS and/or SASL to the brokers")
    kafka_ssl_cafile: str | None = _kafka(None, "CA bundle for TLS to the brokers (None: the system's)")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = _kafka("PLAIN", "SASL mechanism")
    kafka_sasl_username: str | None = _kafka(None, "SASL user")
    kafka_sasl_password: SecretStr | None = _kafka(None, "SASL password (never printed)")
    kafka_request_timeout_ms: int = _kafka(30_000, "timeout of one Kafka request")
    kafka_idempotent_producer: bool = _kafka(True, "idempotent producer (the embedded broker cannot: dev up sets false)")
    # Each hop of a document pays part of the fetch wait at low load: measured on tansu, produce-ack ->
    # consumed median 102 ms at 500 (aiokafka's default), 23 ms at 200, 10 ms at 100, for ~0.01 CPU-s/s
    # more per idle consumer (broker + client).
    kafka_fetch_max_wait_ms: int = _kafka(100, "longest an idle consumer's fetch waits on the broker", ge=1, le=10_000)
    topic_partitions: int = _kafka(4, "partitions of the topics the pipeline creates")
    topic_replication_factor: int = _kafka(1, "replication factor of the topics the pipeline creates")
    consumer_group_prefix: str = _kafka("ocrstream", "consumer groups are <prefix>-<stage>")
    session_timeout_ms: int = _kafka(10_000, "consumer group session timeout")
    heartbeat_interval_ms: int = _kafka(2_000, "consumer group heartbeat interval")
    # Static group membership (KIP-345): a process restarted with its id within session_timeout_ms
    # takes its partitions back without a rebalance (bench/bench_takeover.py).
    group_instance_id: str | None = _kafka(None, "static group member id of this process (e.g. the pod name)")
    max_message_bytes: int = _kafka(16 * 1024 * 1024, "largest event a stage produces or accepts")
    poll_max_records: int = _kafka(16, "records taken per poll")

    # Object store (S3 API: MinIO, SeaweedFS, AWS S3)
    s3_endpoint: str = _s3("127.0.0.1:9000", "host:port of the S3 API")
    s3_access_key: str = _s3("minioadmin", "S3 access key")
    s3_secret_key: SecretStr = _s3(SecretStr("minioadmin"), "S3 secret key (never printed)")
    s3_secure: bool = _s3(False, "TLS to S3 (production); the CA bundle from SSL_CERT_FILE / certifi")
    s3_timeout_s: float = _s3(10.0, "connect and read timeout of one S3 request")
    s3_region: str = _s3("us-east-1", "S3 region")
    s3_bucket: str = _s3(DEFAULT_S3_BUCKET, "bucket of originals and crops (claim checks)")

    # PostgreSQL (TLS in production: ?sslmode=verify-full&sslrootcert=... in the DSN)
    postgres_dsn: SecretStr = _pg(SecretStr("postgresql://ocrstream:ocrstream@127.0.0.1:5432/ocrstream"),
                                  "DSN of the store's database (never printed)")
    postgres_timeout_s: float = _pg(10.0, "connect and per-statement timeout")

    # Retries of transient faults (broker, S3, database down): exponential backoff with full
    # jitter, at most retry_max_attempts per record, then a dead letter (RetriesExhaustedError).
    retry_initial_s: float = _delivery(0.5, "first backoff delay of a transient fault")
    retry_max_s: float = _delivery(30.0, "longest backoff delay")
    retry_max_attempts: int = _delivery(30, "attempts per record before RetriesExhaustedError (~12 min at the defaults)")
    max_delivery_attempts: int = _delivery(
        3, "a record that crashed, hung or OOM-killed its stage this many times is dead-lettered (PoisonMessageError)")
    record_timeout_s: float = _delivery(600.0, "wall time to handle one record (a batch gets n times this)")
    shutdown_grace_s: float = _delivery(10.0, "on SIGTERM, time for the batch in hand to finish; every process is "
                                              "gone at most 5 s later, in any state (exit 143 when it had to be forced)")

    # Doors: the ingest HTTP door, API keys, clients, duplicates, the bucket door
    http_host: str = _doors(DEFAULT_HTTP_HOST, "address the ingest HTTP door binds")
    http_port: int = _doors(DEFAULT_HTTP_PORT, "port of the ingest HTTP door")
    api_keys_file: str | None = _doors(None, "API keys of the HTTP doors (ocrstream/streaming/auth.py)")
    require_api_key: bool = _doors(False, "require a key even on loopback (always required beyond it)")
    rate_limit_per_minute: int = _doors(600, "requests per minute per API key (0 = unlimited)")
    idempotency_ttl_s: float = _doors(24 * 3600.0, "how long the ingest door remembers an Idempotency-Key's answer "
                                                   "(services/ingest/idempotency.py)", gt=0)
    idempotency_sweep_interval_s: float = _doors(
        3600.0, "how often the ingest process deletes Idempotency-Key records older than OCRSTREAM_IDEMPOTENCY_TTL_S",
        gt=0)
    ingest_url: str | None = _doors(None, "the ingest HTTP door's URL for clients (None: http_host:http_port)")
    api_key: SecretStr | None = _doors(None, "the API key clients send to the HTTP doors (never printed)")
    duplicates: Literal["reprocess", "reuse"] = _doors(
        "reprocess", "re-submitted bytes (same sha256 and template) already done: process again, or reuse the id")
    bucket_notifications_topic: str = _doors(
        "ocr.bucket-notifications", "topic of the bucket door's S3 event notifications ('' = off)")
    inbox_bucket: str | None = _doors(None, "bucket watched by the bucket door (None: s3_bucket)")
    inbox_prefix: str = _doors("inbox/", "key prefix watched by the bucket door")
    seaweedfs_buckets_dir: str = _doors("/buckets", "the filer folder holding S3 buckets (SeaweedFS events)")

    # Limits: the budget of one document, checked before the work is done
    max_document_bytes: int = _limits(DEFAULT_MAX_DOCUMENT_BYTES, "largest document accepted by the doors")
    max_image_pixels: int = _limits(80_000_000, "pixels of one page or frame (A3 at 600 dpi is 70 Mpx)")
    max_document_pixels: int = _limits(800_000_000, "pixels of all pages together (200 A4 pages at 200 dpi)")
    max_pages: int = _limits(200, "pages or frames of one document")
    decode_memory_bytes: int = _limits(2 * 1024**3, "address-space limit of the isolated decoder process")
    decode_timeout_s: float = _limits(60.0, "wall time of decoding + detecting one page")
    decode_workers: int = _limits(1, "isolated decoder processes (services/preprocess/worker.py)")
    decode_worker_max_tasks: int = _limits(
        100, "a decoder process is replaced after this many tasks (opening a document is one, each page one)")
    heap_mmap_threshold_bytes: int = _limits(
        1 << 20, "every stage process serves allocations of this size or more by mmap, returned "
                 "when freed, and keeps glibc from raising that threshold by itself (which left thread heaps of "
                 "~16 MiB resident, almost all free: issue 24's soak); 0 = glibc's dynamic default", ge=0)
    max_region_chars: int = _limits(1000, "characters kept per region (longer readings are cut)")
    max_page_crop_bytes: int = _limits(128 * 1024**2, "pixel bytes of one page's crops (h * w * 3 summed)")

    # OCR: decoding, clean-up, detection, templates, post-processing
    pdf_dpi: int = _ocr(200, "resolution PDF pages are rendered at")
    detect_max_side: int = _ocr(1536, "longest side the detector sees (bench_pages: 2048 costs ~90 CPU-ms/page, no CER gain)")
    detect_glyph_px: float = _ocr(12.0, "pages go to the detector at the size that makes their median glyph this tall, px "
                                  "(within detect_min_side..detect_max_side; 0 = always detect_max_side)", ge=0)
    detect_min_side: int = _ocr(640, "the smallest longest side detect_glyph_px shrinks a page to, px", ge=32)
    cleanup_steps: str = _ocr("border,orientation",
                              "comma list of ocrstream/ocr/cleanup.py STEPS, '' = off (bench_pages --stream --ablation)")
    pdf_text: Literal["auto", "ocr", "text"] = _ocr(
        "auto", "PDF text layers page by page (ocrstream/ocr/pdftext.py): auto reads a page whose text is drawn "
                "visibly from the PDF and OCRs the others (no text, an invisible earlier OCR layer, garbage); text | ocr")
    pdf_max_page_chars: int = _limits(100_000, "characters of one page's PDF text layer read at most (more: OCRed)",
                                      ge=1)
    templates_dir: str | None = _ocr(None, "extra fixed-layout templates (*.yaml), beside the shipped ones")
    postprocess_rules: str = _ocr("nfkc,whitespace,confusables,dictionary", "post-processing rules, comma list ('' = off)")
    review_threshold: float = _ocr(0.98, "regions below this confidence get needs_review")
    review_ink_fraction: float = _ocr(
        0.0005, "a page with at least this fraction of ink (cleanup.ink_fraction) and no text gets needs_review "
                "(measured: one text line on A4 0.0008, receipts >= 0.01, noisy blank scans <= 0.00001)", ge=0, le=1)
    receipt_fields: bool = _ocr(True, "receipt fields (vendor, address, date, total, ...: ocrstream/ocr/receipt_fields.py) "
                                      "for documents without a template, in OCRPipeline and the store stage")
    crop_codec: Literal["none", "zlib"] = _ocr(
        "none", "crop transport preprocess -> recognize (zlib level 1: +36 CPU-ms per page for 1.8 -> 0.56 MB)")

    # Models: the recogniser and where it runs
    recognizer: str = _models("ppocr", "recogniser name (ocrstream/ocr/recognition/registry.py)")
    ppocr_model: str | None = _models(
        None, "a fine-tuned PP-OCR model's manifest.json or folder (sha256 checked at load); None = PP-OCRv6")
    device: str = _models("auto", "auto | cpu | cuda (auto: CUDA when onnxruntime-gpu and a GPU are there)")
    inference: str = _models("auto", "backend: auto (detector: OpenVINO bf16 on CPUs with native bfloat16, else ONNX "
                                     "Runtime; recogniser: ONNX Runtime int8; CUDA: ONNX Runtime fp32) | onnxruntime | "
                                     "onnxruntime-int8 | openvino-bf16 | openvino-fp32")
    follow_promoted_model: bool = _models(
        False, "recognize serves the model promoted by `ocrstream model promote` (PostgreSQL pointer), "
               "switching between batches when a newer one is promoted (needs PostgreSQL)")
    model_poll_s: float = _models(10.0, "how often a following recognize stage asks for the promoted model, seconds",
                                  gt=0)
    model_cache_dir: str | None = _models(
        None, "where promoted models are downloaded (None: <temp dir>/ocrstream-models)")
    batch_max_size: int = _models(32, "recogniser micro-batch: most crops per model call")
    batch_max_wait_ms: int = _models(20, "recogniser micro-batch: longest wait for more crops once some were "
                                         "ready at once (none for a document that came to an idle stage)")
    heap_trim: bool = _models(True, "recognize gives freed heap back to the OS after every batch (glibc malloc_trim)")
    opencv_threads: int = _models(
        1, "OpenCV's threads in the processes that run it (recognize, decoder workers, OCRPipeline.from_settings; "
           "0 = OpenCV's default, one per core): 1 costs 5 % less CPU per page for the same wall time "
           "(ocrstream/ocr/runtime/opencv_threads.py)", ge=0)

    # Observability: metrics, probes, lag
    metrics_port: int | None = _obs(
        None, "port of /metrics, /healthz, /readyz (None: the process's default, contracts/stages.py; 0 = off)")
    lag_refresh_s: float = _obs(5.0, "ocrstream_consumer_lag refresh period")
    cost_max_key_labels: int = _obs(50, "API key names with their own label in the per-tenant cost metrics "
                                         "(later ones count as 'other')", ge=0)
    health_probe_interval_s: float = _obs(5.0, "period of the Kafka/S3/PostgreSQL readiness probes")
    health_probe_timeout_s: float = _obs(3.0, "timeout of one readiness probe")
    health_max_poll_age_s: float = _obs(30.0, "not ready when the stage loop has not polled for longer")
    health_max_retry_s: float = _obs(60.0, "not ready when retrying without a commit for longer")
    dependency_exit_s: float = _obs(120.0, "crash-only: a process whose dependencies stay unreachable for longer "
                                           "exits with status 3 for its supervisor to restart (0 = never)", ge=0)
    lag_exporter_port: int = _obs(9108, "port of `ocrstream lag-exporter`")
    lag_exporter_interval_s: float = _obs(15.0, "how often the lag exporter reads the groups' lag")

    # HTTP APIs: the query API process (`ocrstream run api`, services/store/api.py)
    query_port: int = _http(8081, "port of the query API (0 = off)")
    http_header_timeout_s: float = _http(
        10.0, "both HTTP doors: a connection whose request line and headers are not all in within this many "
              "seconds of its first byte (or of the connection) is closed (slowloris)", gt=0)
    http_body_timeout_s: float = _http(
        120.0, "both HTTP doors: a request body not all in within this many seconds of its headers is "
               "dropped and the connection closed (8 MB at 1 Mbit/s takes 64 s)", gt=0)
    api_postgres_dsn: SecretStr | None = _http(
        None, "a login role in ocrstream_read for the query API (None: the store's DSN with that role set)")
    api_pool_size: int = _http(4, "connections of the query API's read-only pool")
    # Review (the query API's /v1/review, /v1/regions/{id}/verify and /review page: services/store/review.py)
    review_postgres_dsn: SecretStr | None = _http(
        None, "a login role in ocrstream_review for verifying (None: the store's DSN with that role set)")
    review_crop_max_pixels: int = _http(
        400_000, "pixels (width * height) of one review crop at most: larger crops are scaled down", ge=1024)
    review_crop_margin_px: int = _http(6, "page pixels added around a region's box in its review crop", ge=0, le=200)
    review_max_text_chars: int = _http(1000, "characters of one verified text at most (longer: 422)", ge=1)
    review_history_max: int = _http(20, "earlier corrections kept per region (older ones are dropped)", ge=1)
    review_char_threshold: float = _http(
        0.9, "characters read with a probability under this are marked on the review page", ge=0, le=1)
    review_session_ttl_s: int = _http(8 * 3600, "lifetime of a review page login (session cookie), seconds", ge=60)
    review_session_secret: SecretStr | None = _http(
        None, "signs review page session cookies; the same on every API replica (None: random per process)")
    review_max_sessions: int = _http(1000, "logged-out review sessions remembered per process (oldest forgotten)", ge=1)

    # Completion webhooks (ocrstream/streaming/webhooks.py): a callback URL per submission, an outbox
    # row written with the result, signed POSTs (Standard Webhooks) retried with backoff, then failed.
    webhook_secret: SecretStr | None = _doors(
        None, "signing secret of completion webhooks (whsec_<base64>, Standard Webhooks; never printed); "
              "unset: callback URLs are refused at the doors and nothing is sent")
    webhook_allow_hosts: str = _doors(
        "", "comma list of hosts and CIDRs callbacks may target although loopback, link-local or private")
    webhook_timeout_s: float = _delivery(10.0, "timeout of one webhook request (connect + response)", gt=0)
    webhook_max_attempts: int = _delivery(12, "webhook attempts before the delivery is marked failed", ge=1)
    webhook_max_age_s: float = _delivery(86400.0, "webhook retries stop this long after the result was stored", gt=0)
    webhook_retry_initial_s: float = _delivery(2.0, "first webhook retry delay (doubling, full jitter)", gt=0)
    webhook_retry_max_s: float = _delivery(600.0, "longest webhook retry delay", gt=0)
    webhook_concurrency: int = _delivery(4, "webhook deliveries in flight per store process", ge=1)
    webhook_max_payload_bytes: int = _limits(64 * 1024, "largest webhook body (the text is cut to fit)", ge=1024)
    webhook_poll_s: float = _delivery(1.0, "how often the webhook sender looks for due deliveries", gt=0)

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



def describe(settings: Settings) -> list[dict[str, Any]]:
    """Every setting as ``{"group", "name", "env", "value", "description"}``, in :data:`GROUPS` order
    then declaration order; secrets as ``**********`` (pydantic's SecretStr repr), never their value."""
    rows = []
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        value = getattr(settings, name)
        rows.append({"group": str(extra.get("group", "")), "name": name, "env": f"OCRSTREAM_{name.upper()}",
                     "value": str(value) if isinstance(value, SecretStr) else value,
                     "description": info.description or ""})
    order = {group: i for i, group in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: order.get(r["group"], len(order)))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings: environment first, then the dev stack's dotenv file if present."""
    try:
        return Settings(_env_file=env_file_path())
    except ValueError as exc:  # pydantic's ValidationError: name every bad variable
        raise ConfigurationError(f"invalid configuration: {exc}") from None

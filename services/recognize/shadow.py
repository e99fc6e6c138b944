"""A candidate model in shadow: ``ocrstream run recognize --shadow SHA``.

It reads ``ocr.regions.v1`` like recognize, in a consumer group of its own
(``<prefix>-recognize-shadow-<sha256[:12]>``: the live group's offsets and pace are untouched),
with the registered model SHA (ocrstream/storage/models.py: fetched from the object store,
sha256 verified), and writes each region's reading to PostgreSQL's ``shadow_readings`` -
never an event: nothing reaches ``ocr.recognized.v1``, the results or the dead-letter topic.
``ocrstream model compare SHA`` sets them against the live readings and the verified text.

Per batch it records the process CPU time of the model call divided by the lines read
(``cpu_ms``; ``ocrstream_shadow_cpu_seconds_per_line``) and counts agreement with the live
reading where the store already has it (``ocrstream_shadow_regions_total{agrees}``). A record
it cannot read (a missing crop pack, a broken event, PostgreSQL down past the retries) is
logged, counted (``ocrstream_shadow_errors_total``) and skipped: a shadow measures, it never
fails a document. Metrics and probes on port 9106 (``recognize-shadow``; it needs Kafka, S3 and
PostgreSQL). While it runs, its registration (``model_shadows``, removed at a clean stop) lets
``ocrstream status`` show the group and its lag.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from prometheus_client import Counter, Histogram

from ocrstream.errors import ConfigurationError
from ocrstream.ocr.recognition.model_manifest import ModelIntegrityError
from ocrstream.settings import Settings
from ocrstream.storage import models
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming.stage import Output, Result
from services.recognize.stage import RecognizeStage, _from_layer, load_warm

log = logging.getLogger(__name__)

SHADOW_REGIONS = Counter("ocrstream_shadow_regions_total", "Regions a shadow model read, by whether its text equals "
                         "the live reading (unknown: not stored yet)", ["model", "agrees"])
SHADOW_CPU = Histogram("ocrstream_shadow_cpu_seconds_per_line", "Process CPU seconds per line of a shadow model's batch",
                       ["model"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1))
SHADOW_ERRORS = Counter("ocrstream_shadow_errors_total", "Records a shadow model skipped (logged)", ["model"])

INSERT = """
INSERT INTO shadow_readings (sha256, document_id, region_id, text, confidence, cpu_ms) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (sha256, document_id, region_id) DO UPDATE SET text = EXCLUDED.text, confidence = EXCLUDED.confidence,
    cpu_ms = EXCLUDED.cpu_ms, read_at = now()
"""


class ShadowStage(RecognizeStage):
    """Reads ``ocr.regions.v1`` with registered model ``sha`` into ``shadow_readings``; produces nothing."""

    name = "recognize-shadow"

    def __init__(self, settings: Settings, sha: str):
        super().__init__(settings)
        self.wanted = sha
        self.sha256 = ""

    def consumer_group(self) -> str:
        """``<prefix>-recognize-shadow-<sha256[:12]>`` (the wanted sha before setup resolves it)."""
        return f"{self.settings.consumer_group_prefix}-recognize-shadow-{(self.sha256 or self.wanted)[:12]}"

    async def setup(self) -> None:
        """Resolve and fetch the candidate (verified), load it, apply the migrations, register the shadow.

        Raises ConfigurationError: the model is not registered, fails its check, or is not ppocr.
        """
        from ocrstream.storage.db import create_pool
        from ocrstream.storage.migrate import apply_migrations

        self.store = ObjectStore(self.settings)
        try:
            found = await models.resolve(self.settings, self.wanted)
            cache = self.settings.model_cache_dir or str(Path(tempfile.gettempdir()) / "ocrstream-models")
            manifest = await models.cached_model(self.settings, found.sha256, cache)
        except (models.UnknownModelError, ModelIntegrityError) as exc:
            raise ConfigurationError(f"shadow model {self.wanted!r}: {type(exc).__name__}: {exc}") from None
        if found.manifest.get("kind") != "ppocr":
            raise ConfigurationError(f"shadow model {found.sha256[:12]} is a {found.manifest.get('kind')!r} model; "
                                     "shadows serve ppocr models")
        self.sha256 = found.sha256
        self.options = {"device": self.settings.device, "max_batch_size": self.settings.batch_max_size,
                        "max_chars": self.settings.max_region_chars}
        self.use(await asyncio.to_thread(load_warm, "ppocr", model=str(manifest), **self.options))
        self.pool: Any = await create_pool(self.settings, max_size=2)
        async with self.pool.acquire() as conn:
            await apply_migrations(conn)
        await self.pool.execute("INSERT INTO model_shadows (sha256, model_id, consumer_group) VALUES ($1, $2, $3)"
                                " ON CONFLICT (sha256) DO UPDATE SET consumer_group = EXCLUDED.consumer_group,"
                                " started_at = now()", self.sha256, found.model_id, self.consumer_group())
        self.model_id = found.model_id
        self.live_sha, self.model_pool, self._poller = None, None, None
        log.info("recognize-shadow: reading as %s (%s), group %s", found.model_id, self.sha256[:12],
                 self.consumer_group())

    async def teardown(self) -> None:
        """Deregister the shadow (``ocrstream status`` lists running shadows only; its readings
        stay for ``model compare``) and close the pool."""
        if getattr(self, "pool", None) is not None:
            try:
                await self.pool.execute("DELETE FROM model_shadows WHERE sha256 = $1", self.sha256)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL gone: the row stays, status shows it not ready
                log.warning("recognize-shadow: cannot deregister: %s: %s", type(exc).__name__, exc)
            await self.pool.close()

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        return []

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        """Read every record's regions with the candidate and store the readings; never an output."""
        loaded = await asyncio.gather(*(self.load(r) for r in records), return_exceptions=True)
        good = [item for item in loaded if not isinstance(item, BaseException)]
        for item in loaded:
            if isinstance(item, BaseException):
                self._skip("load", item)
        crops = [c for _, doc_crops in good for c in doc_crops]
        if not crops:
            return [[] for _ in records]
        recognizer = self.current[0]
        started = time.process_time()
        readings = await asyncio.to_thread(recognizer.recognize, crops)
        per_line_s = (time.process_time() - started) / len(crops)
        SHADOW_CPU.labels(self.model_id).observe(per_line_s)
        rows: list[tuple[str, str, str, str, float, float]] = []
        for event, _ in good:
            for region in event.regions:
                if _from_layer(region):  # read from a PDF's text layer: no model involved
                    continue
                reading = readings[len(rows)]
                rows.append((self.sha256, event.document_id, region.region_id, reading.text,
                             round(float(reading.confidence), 4), round(per_line_s * 1000, 3)))
        try:
            await self.pool.executemany(INSERT, rows)
            live = await self.pool.fetch(
                "SELECT document_id, region_id, coalesce(raw_text, text) AS text FROM regions"
                " WHERE document_id = ANY($1::text[])", list({r[1] for r in rows}))
        except Exception as exc:  # noqa: BLE001 - a shadow never fails a document
            self._skip("store", exc)
            return [[] for _ in records]
        by_region = {(r["document_id"], r["region_id"]): r["text"] for r in live}
        for _, doc, region_id, text, _, _ in rows:
            known = by_region.get((doc, region_id))
            SHADOW_REGIONS.labels(self.model_id, "unknown" if known is None else str(known == text).lower()).inc()
        return [[] for _ in records]

    def _skip(self, what: str, exc: BaseException) -> None:
        SHADOW_ERRORS.labels(getattr(self, "model_id", self.wanted)).inc()
        log.error("recognize-shadow: %s failed, skipped: %s: %s", what, type(exc).__name__, exc)

"""recognize: line crops -> text and confidence per region -> ``ocr.recognized.v1``.

Micro-batching across events: the stage loop hands over every record of a poll (up to
``poll_max_records``, waiting ``batch_max_wait_ms`` for more once some were ready at once); this stage
downloads the crops of all of them, reads them in one recogniser call (which batches by
``batch_max_size`` crops, grouped by aspect ratio) and splits the readings back per document.
Under load batches fill up and throughput grows; a lone document on an idle stage does not wait
(it took the poll longer than the linger to arrive).
The recogniser is chosen by ``OCRSTREAM_RECOGNIZER`` (default ``ppocr``).

With ``OCRSTREAM_FOLLOW_PROMOTED_MODEL`` (ppocr only) the stage serves the model promoted by
``ocrstream model promote`` (the newest row of ``model_promotions`` in PostgreSQL, the model
from the object store's registry, ocrstream/storage/models.py): at start, then every
``OCRSTREAM_MODEL_POLL_S`` it asks for the live model and, when it changed, downloads and loads
it in a thread and swaps it in. A batch reads with the model it started with, so the switch
happens between batches, without a restart; every recognized event names its model
(``recognizer.model``). A promoted model that cannot be fetched or loaded is logged and
counted (``ocrstream_model_switch_failures_total``) and the current one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.contracts.event_models import UNSET, RecognizedEvent, RecognizedRegion, Recognizer, RegionsEvent
from ocrstream.errors import ConfigurationError
from ocrstream.ocr.recognition.recognizer import LineReading
from ocrstream.ocr.recognition.registry import load_recognizer
from ocrstream.ocr.runtime import heap
from ocrstream.ocr.runtime.opencv_threads import limit_opencv_threads
from ocrstream.ocr.words import reading_fields
from ocrstream.storage import models
from ocrstream.storage.crops import region_crops
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import costs, metrics, tracing
from ocrstream.streaming.stage import Output, Result, Stage

log = logging.getLogger(__name__)


def load_warm(name: str, **options: Any) -> Any:
    """The recogniser ``name`` (``load_recognizer``), its memory brought to its ceiling before it
    serves (``warm_up``, where it has one: the ppocr recogniser; issue 24's soak)."""
    recognizer = load_recognizer(name, **options)
    if hasattr(recognizer, "warm_up"):
        recognizer.warm_up()
    return recognizer


def _prune(cache: Path, keep: str) -> None:
    """Delete the downloaded models in ``cache`` but ``keep`` (one model on disk at a time)."""
    import shutil

    for folder in cache.iterdir() if cache.is_dir() else ():
        if folder.is_dir() and folder.name != keep and len(folder.name) == 64:
            shutil.rmtree(folder, ignore_errors=True)


class RecognizeStage(Stage):
    """Consumes ``ocr.regions.v1``, produces ``ocr.recognized.v1``."""

    name = "recognize"
    input_topics = (events.REGIONS,)

    @property
    def linger_ms(self) -> int:
        return self.settings.batch_max_wait_ms

    async def setup(self) -> None:
        """The object store, the recogniser (``OCRSTREAM_RECOGNIZER``, ``OCRSTREAM_PPOCR_MODEL``)
        and, when following promotions, the promoted model and the task that polls for newer ones.

        Raises ConfigurationError: following promotions with another recogniser than ppocr.
        """
        self.store = ObjectStore(self.settings)
        limit_opencv_threads(self.settings.opencv_threads)  # the crops' resizing and colour conversion
        self.options: dict[str, Any] = {"device": self.settings.device, "max_batch_size": self.settings.batch_max_size,
                                        "max_chars": self.settings.max_region_chars}
        options = dict(self.options)
        if self.settings.recognizer == "ppocr" and self.settings.ppocr_model:
            options["model"] = self.settings.ppocr_model  # fine-tuned: hash checked at load
        recognizer = await asyncio.to_thread(load_warm, self.settings.recognizer, **options)
        self.use(recognizer)
        metrics.STAGE_INFO.labels(self.name, "recognizer", self.recognizer.name).set(1)
        metrics.STAGE_INFO.labels(self.name, "provider", self.recognizer.provider).set(1)
        self.live_sha: str | None = None
        self.model_pool: Any = None
        self._poller: asyncio.Task[None] | None = None
        if self.settings.follow_promoted_model:
            if self.settings.recognizer != "ppocr":
                raise ConfigurationError("OCRSTREAM_FOLLOW_PROMOTED_MODEL serves promoted ppocr models; "
                                         f"OCRSTREAM_RECOGNIZER is {self.settings.recognizer!r}")
            from ocrstream.storage.db import create_pool

            self.model_pool = await create_pool(self.settings, max_size=1)
            await self.refresh_model()
            self._poller = asyncio.create_task(self._poll_promotions())

    def use(self, recognizer: Any) -> None:
        """Serve ``recognizer`` from the next batch on (one assignment: a batch in flight keeps its own)."""
        old = getattr(self, "model_version", None)
        self.current = (recognizer, getattr(recognizer, "version", None))
        if old and old != self.model_version:
            try:
                metrics.STAGE_INFO.remove(self.name, "model", old)
            except KeyError:
                pass
        if self.model_version:
            metrics.STAGE_INFO.labels(self.name, "model", self.model_version).set(1)

    @property
    def recognizer(self) -> Any:
        """The recogniser serving now (setting it serves another from the next batch, no metrics)."""
        return self.current[0]

    @recognizer.setter
    def recognizer(self, recognizer: Any) -> None:
        self.current = (recognizer, getattr(recognizer, "version", None))

    @property
    def model_version(self) -> str | None:
        """The serving model's version (``recognizer.model`` of the events), or None."""
        return self.current[1]

    @model_version.setter
    def model_version(self, version: str | None) -> None:
        self.current = (self.current[0], version)

    async def refresh_model(self) -> bool:
        """Ask PostgreSQL for the promoted model; when it is not the one serving, fetch it from
        the registry (cached in ``OCRSTREAM_MODEL_CACHE_DIR``; other models there are deleted
        once it serves), load it in a thread and serve it from the next batch. True when it
        switched. Raises the registry's, loader's and database's errors (:meth:`_poll_promotions`
        logs and counts them)."""
        live = await models.live_model(self.model_pool)
        if live is None or live["sha256"] == self.live_sha:
            return False
        cache = self.settings.model_cache_dir or str(Path(tempfile.gettempdir()) / "ocrstream-models")
        manifest = await models.cached_model(self.settings, live["sha256"], cache)
        recognizer = await asyncio.to_thread(load_warm, "ppocr", model=str(manifest), **self.options)
        self.use(recognizer)
        self.live_sha = live["sha256"]
        await asyncio.to_thread(_prune, Path(cache), keep=live["sha256"])
        log.info("recognize: serving promoted model %s (%s)", live["model_id"], live["sha256"][:12])
        return True

    async def _poll_promotions(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_s)
            try:
                await self.refresh_model()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad or unreachable model never stops the serving one
                metrics.MODEL_SWITCH_FAILURES.labels(self.name).inc()
                log.error("recognize: cannot switch to the promoted model: %s: %s", type(exc).__name__, exc)

    async def teardown(self) -> None:
        """Stop polling for promotions; close the pool."""
        if getattr(self, "_poller", None) is not None:
            self._poller.cancel()  # type: ignore[union-attr]
            await asyncio.gather(self._poller, return_exceptions=True)  # type: ignore[arg-type]
        if getattr(self, "model_pool", None) is not None:
            await self.model_pool.close()
        await super().teardown()

    async def load(self, record: ConsumerRecord) -> tuple[RegionsEvent, list[np.ndarray]]:
        """The record's event and its crops: one GET per page's crop pack (concurrently), cut
        out in a thread (:func:`ocrstream.storage.crops.region_crops`; errors: MissingObjectError,
        TruncatedImageError -> dead letter)."""
        event = events.decode(events.REGIONS, record.value)
        to_read = [r for r in event.regions if not _from_layer(r)]  # PDF text-layer regions have no crop
        keys = list(dict.fromkeys(r.crop_key for r in to_read))
        objects = dict(zip(keys, await asyncio.gather(*(self.store.get(k) for k in keys))))
        costs.add_bytes(read=sum(len(o) for o in objects.values()))
        return event, await asyncio.to_thread(region_crops, to_read, objects,
                                              max_bytes=self.settings.max_page_crop_bytes)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        result = (await self.handle_batch([record]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def _load_metered(self, record: ConsumerRecord) -> tuple[RegionsEvent, list[np.ndarray], int]:
        """:meth:`load` and the bytes it read (the record's value and the crop packs)."""
        with costs.metering(self.name, len(record.value or b"")) as meter:
            event, crops = await self.load(record)
        return event, crops, meter.bytes_in

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        """Read every record's crops in one recogniser call; each output carries its document's
        share of the batch's cost (CPU and wall split by crop widths at the model's height, plus
        one for the document: :func:`ocrstream.streaming.costs.split`)."""
        meter = costs.Meter(self.name)
        loaded = await asyncio.gather(*(self._load_metered(r) for r in records), return_exceptions=True)
        crops = [c for item in loaded if not isinstance(item, BaseException) for c in item[1]]
        if crops:
            metrics.RECOGNIZER_BATCH.observe(len(crops))
        # A recogniser failure fails the batch as a whole: the runtime splits it until the
        # document that causes it is alone, so the other documents are read. The whole batch
        # reads with the model serving when it started (a promotion switches between batches).
        recognizer, version = self.current
        started = time.time_ns()
        readings = await asyncio.to_thread(self._recognize, recognizer, crops) if crops else []
        ended = time.time_ns()
        results: list[Result] = []
        start = 0
        ok = [item for item in loaded if not isinstance(item, BaseException)]
        shares = iter(costs.split(meter.read(), [1.0 + sum(c.shape[1] / max(c.shape[0], 1) for c in item[1])
                                                 for item in ok], [item[2] for item in ok]))
        for record, item in zip(records, loaded):
            if isinstance(item, BaseException):
                results.append(item)
                continue
            event, doc_crops, _ = item
            # the batch's one recogniser call, as a child span of each document's stage span
            tracing.child(record, "recognition", started, ended, {
                "ocrstream.regions": len(doc_crops), "ocrstream.batch.crops": len(crops),
                "ocrstream.batch.documents": len(records), "ocrstream.recognizer": recognizer.name,
                "ocrstream.model": version or ""})
            widths = [crop.shape[1] for crop in doc_crops]
            output = self.output(event, readings[start:start + len(doc_crops)], widths, recognizer, version)
            results.append(costs.stamp([output], next(shares)))
            start += len(doc_crops)
        return results

    def _recognize(self, recognizer: Any, crops: list[np.ndarray]) -> list[LineReading]:
        """``recognizer.recognize(crops)`` in a worker thread, then the freed heap given back to the
        OS (``heap_trim``, :func:`ocrstream.ocr.runtime.heap.trim`): the batch's crops and the model's
        intermediate arrays are freed in the heaps of the threads that ran it, where glibc keeps
        pages freed below a heap's top resident. (Alone it did not stop the soak's growth, +20 %
        over 10,000 documents: that was the thread heaps' tops, which the fixed mmap threshold
        every stage process sets at start keeps small, :func:`ocrstream.streaming.stage.run_stage`; issue 24.)"""
        try:
            return recognizer.recognize(crops)
        finally:
            if self.settings.heap_trim:
                heap.trim()

    def output(self, event: RegionsEvent, readings: Sequence[LineReading], widths: Sequence[int],
               recognizer: Any = None, version: str | None = None) -> Output:
        """The ``recognized`` event: ``event``'s regions with text, confidence, per-character
        probabilities and word boxes added (``widths``: crop widths in px, for the word boxes),
        naming ``recognizer`` and its model ``version`` (default: the serving ones).
        ``readings``/``widths`` are those of the regions to recognise; a region read from the PDF's
        text layer (``layer_text``) takes its text and words from there, confidence 1.0."""
        if recognizer is None:
            recognizer, version = self.current
        recognised = iter(zip(readings, widths))
        regions = []
        for region in event.regions:
            fields = events.to_json_object(region)
            if _from_layer(region):
                layer = fields.pop("layer_text")
                fields.update(text=layer["text"], confidence=1.0, char_probs=[1.0] * len(layer["text"]),
                              words=layer["words"])
            else:
                reading, width = next(recognised)
                fields.update(reading_fields(reading, width, region.quad or None))
            regions.append(events.convert(RecognizedRegion, fields, events.RECOGNIZED))
        out = RecognizedEvent(
            document_id=event.document_id, document=event.document,
            timestamps=msgspec.structs.replace(event.timestamps, recognized=events.now_iso()),
            pages=event.pages,
            recognizer=Recognizer(name=recognizer.name, provider=recognizer.provider,
                                  model=version or UNSET),
            regions=regions, costs=event.costs)
        return Output(events.RECOGNIZED, event.document_id, out)


def _from_layer(region) -> bool:
    """Whether ``region`` was read from a PDF's text layer (nothing to recognise)."""
    return region.source == "pdf-text" and region.layer_text is not UNSET

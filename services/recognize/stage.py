"""recognize: line crops -> text and confidence per region -> ``ocr.recognized.v1``.

Micro-batching across events: the stage loop hands over every record of a poll (up to
``poll_max_records``, waiting ``batch_max_wait_ms`` for more once one arrived); this stage
downloads the crops of all of them, reads them in one recogniser call (which batches by
``batch_max_size`` crops, grouped by aspect ratio) and splits the readings back per document.
Under load batches fill up and throughput grows; a lone document waits at most the linger.
The recogniser is chosen by ``OCRSTREAM_RECOGNIZER`` (default ``ppocr``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import numpy as np
from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.contracts.event_models import UNSET, RecognizedEvent, RecognizedRegion, Recognizer, RegionsEvent
from ocrstream.ocr.recognition.recognizer import LineReading
from ocrstream.ocr.recognition.registry import load_recognizer
from ocrstream.ocr.words import reading_fields
from ocrstream.storage.crops import region_crops
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import metrics, tracing
from ocrstream.streaming.stage import Output, Result, Stage


class RecognizeStage(Stage):
    """Consumes ``ocr.regions.v1``, produces ``ocr.recognized.v1``."""

    name = "recognize"
    input_topics = (events.REGIONS,)

    @property
    def linger_ms(self) -> int:
        return self.settings.batch_max_wait_ms

    async def setup(self) -> None:
        self.store = ObjectStore(self.settings)
        options = {"device": self.settings.device, "max_batch_size": self.settings.batch_max_size,
                   "max_chars": self.settings.max_region_chars}
        if self.settings.recognizer == "ppocr" and self.settings.ppocr_model:
            options["model"] = self.settings.ppocr_model  # fine-tuned: hash checked at load
        self.recognizer = await asyncio.to_thread(load_recognizer, self.settings.recognizer, **options)
        self.model_version = getattr(self.recognizer, "version", None)
        metrics.STAGE_INFO.labels(self.name, "recognizer", self.recognizer.name).set(1)
        metrics.STAGE_INFO.labels(self.name, "provider", self.recognizer.provider).set(1)
        if self.model_version:
            metrics.STAGE_INFO.labels(self.name, "model", self.model_version).set(1)

    async def load(self, record: ConsumerRecord) -> tuple[RegionsEvent, list[np.ndarray]]:
        """The record's event and its crops: one GET per page's crop pack (concurrently), cut
        out in a thread (:func:`ocrstream.storage.crops.region_crops`; errors: MissingObjectError,
        TruncatedImageError -> dead letter)."""
        event = events.decode(events.REGIONS, record.value)
        to_read = [r for r in event.regions if not _from_layer(r)]  # PDF text-layer regions have no crop
        keys = list(dict.fromkeys(r.crop_key for r in to_read))
        objects = dict(zip(keys, await asyncio.gather(*(self.store.get(k) for k in keys))))
        return event, await asyncio.to_thread(region_crops, to_read, objects,
                                              max_bytes=self.settings.max_page_crop_bytes)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        result = (await self.handle_batch([record]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        loaded = await asyncio.gather(*(self.load(r) for r in records), return_exceptions=True)
        crops = [c for item in loaded if not isinstance(item, BaseException) for c in item[1]]
        if crops:
            metrics.RECOGNIZER_BATCH.observe(len(crops))
        # A recogniser failure fails the batch as a whole: the runtime splits it until the
        # document that causes it is alone, so the other documents are read.
        started = time.time_ns()
        readings = await asyncio.to_thread(self.recognizer.recognize, crops) if crops else []
        ended = time.time_ns()
        results: list[Result] = []
        start = 0
        for record, item in zip(records, loaded):
            if isinstance(item, BaseException):
                results.append(item)
                continue
            event, doc_crops = item
            # the batch's one recogniser call, as a child span of each document's stage span
            tracing.child(record, "recognition", started, ended, {
                "ocrstream.regions": len(doc_crops), "ocrstream.batch.crops": len(crops),
                "ocrstream.batch.documents": len(records), "ocrstream.recognizer": self.recognizer.name,
                "ocrstream.model": self.model_version or ""})
            widths = [crop.shape[1] for crop in doc_crops]
            results.append([self.output(event, readings[start:start + len(doc_crops)], widths)])
            start += len(doc_crops)
        return results

    def output(self, event: RegionsEvent, readings: Sequence[LineReading], widths: Sequence[int]) -> Output:
        """The ``recognized`` event: ``event``'s regions with text, confidence, per-character
        probabilities and word boxes added (``widths``: crop widths in px, for the word boxes).
        ``readings``/``widths`` are those of the regions to recognise; a region read from the PDF's
        text layer (``layer_text``) takes its text and words from there, confidence 1.0."""
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
            recognizer=Recognizer(name=self.recognizer.name, provider=self.recognizer.provider,
                                  model=self.model_version or UNSET),
            regions=regions)
        return Output(events.RECOGNIZED, event.document_id, out)


def _from_layer(region) -> bool:
    """Whether ``region`` was read from a PDF's text layer (nothing to recognise)."""
    return region.source == "pdf-text" and region.layer_text is not UNSET

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
from collections.abc import Sequence

import cv2
import numpy as np
from aiokafka import ConsumerRecord

from services.core import events, metrics
from services.core.errors import TruncatedImageError
from services.core.objectstore import ObjectStore
from services.core.stage import Output, Result, Stage
from services.pipeline.words import reading_fields
from services.recognize.recognizer import LineReading, load_recognizer


def decode_crop(png: bytes) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR of a stored crop; raises TruncatedImageError if undecodable."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TruncatedImageError("stored crop is not a decodable PNG")
    return image


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

    async def load(self, record: ConsumerRecord) -> tuple[events.Event, list[np.ndarray]]:
        """The record's event and its crops, downloaded concurrently and decoded in a thread."""
        event = events.decode(events.REGIONS, record.value)
        pngs = await asyncio.gather(*(self.store.get(r["crop_key"]) for r in event["regions"]))
        return event, await asyncio.to_thread(lambda: [decode_crop(png) for png in pngs])

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
        readings = await asyncio.to_thread(self.recognizer.recognize, crops) if crops else []
        results: list[Result] = []
        start = 0
        for item in loaded:
            if isinstance(item, BaseException):
                results.append(item)
                continue
            event, doc_crops = item
            widths = [crop.shape[1] for crop in doc_crops]
            results.append([self.output(event, readings[start:start + len(doc_crops)], widths)])
            start += len(doc_crops)
        return results

    def output(self, event: events.Event, readings: Sequence[LineReading], widths: Sequence[int]) -> Output:
        """The ``recognized`` event: ``event``'s regions with text, confidence, per-character
        probabilities and word boxes added (``widths``: crop widths in px, for the word boxes)."""
        regions = [{**region, **reading_fields(reading, width, region.get("quad"))}
                   for region, reading, width in zip(event["regions"], readings, widths)]
        out = {"schema": events.RECOGNIZED, "document_id": event["document_id"],
               "document": event["document"],
               "timestamps": {**event["timestamps"], "recognized": events.now_iso()},
               "pages": event["pages"],
               "recognizer": {"name": self.recognizer.name, "provider": self.recognizer.provider,
                              **({"model": self.model_version} if self.model_version else {})},
               "regions": regions}
        return Output(events.RECOGNIZED, event["document_id"], out)

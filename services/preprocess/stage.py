"""preprocess: original -> pages -> text-line crops in the bucket -> ``ocr.regions.v1``.

Per document, this process does only I/O: download the original (claim check), hand it to the
isolated decoder (:mod:`.worker`: a worker process with a memory limit and a timeout per page),
upload each page's crops as ONE object, raw pixels (:mod:`ocrstream.storage.crops`), under
``crops/<document_id>/p<page>.crops`` as soon as the page is done, and emit one event with every
region's box in page pixels, its visual line and its place in reading order. In the worker: the
document's budget is checked from its headers before any pixel is decoded (:mod:`.decode`: sniffed
type, pages, pixels per page and in total, truncation, lying headers, encryption), then page by page
it is decoded, cleaned, and cut into regions (:mod:`.regions`): the named field boxes of a fixed-
layout template (:mod:`.templates`), otherwise text lines detected with the PP-OCRv6 DBNet model
(:mod:`.detect`). A bomb or a decoder crash costs only its document
(:class:`~ocrstream.errors.DecoderCrashedError`).
"""

from __future__ import annotations

import asyncio

import msgspec
from aiokafka import ConsumerRecord
from msgspec import UNSET

from ocrstream.contracts import events
from ocrstream.contracts.event_models import Page, Region, RegionsEvent
from ocrstream.errors import DocumentTooLargeError
from ocrstream.ocr.layout import block_ids
from ocrstream.ocr.runtime.onnx_session import resolve_backend
from ocrstream.ocr.templates import get_template
from ocrstream.storage.crops import page_crops_key
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import costs, metrics, tracing
from ocrstream.streaming.stage import Output, Stage
from services.preprocess.worker import DecoderPool, PageResult


class PreprocessStage(Stage):
    """Consumes ``ocr.ingested.v1``, produces ``ocr.regions.v1``."""

    name = "preprocess"
    input_topics = (events.INGESTED,)

    async def setup(self) -> None:
        """Bucket, decoder workers, and the detector's inference backend in ``ocrstream_stage_info``
        (``key="detector_backend"``: what the workers' detector runs on, ``resolve_backend`` for this
        process's settings, e.g. ``openvino-bf16`` on a CPU with native bfloat16)."""
        self.store = ObjectStore(self.settings)
        await self.store.ensure_bucket()
        self.decoder = DecoderPool.from_settings(self.settings)
        await self.decoder.start()
        # off the event loop: the first resolve imports OpenVINO and asks the CPU plugin for its capabilities
        backend = await asyncio.to_thread(resolve_backend, self.settings.device)
        metrics.STAGE_INFO.labels(self.name, "detector_backend", backend).set(1)

    async def teardown(self) -> None:
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.close()

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        event = events.decode(events.INGESTED, record.value)
        doc_id = event.document_id
        name = event.document.template
        template = get_template(name, self.settings.templates_dir) if name else None
        data = await self.store.get(event.document.object_key)
        costs.add_bytes(read=len(data))
        if len(data) > self.settings.max_document_bytes:
            raise DocumentTooLargeError(f"document is {len(data)} bytes; the limit is "
                                        f"{self.settings.max_document_bytes} (OCRSTREAM_MAX_DOCUMENT_BYTES)")
        pages: list[Page] = []
        regions: list[Region] = []
        async with self.decoder.open(data) as document:
            del data
            for page_index in range(len(document.page_sizes)):
                page = await document.page(page_index, template)
                costs.add_cpu(page.cpu_s)  # the decoder worker's share of the document's cost
                metrics.PAGES.labels(page.text_source).inc()
                tracing.add_phases(page.phases, {"ocrstream.page_index": page_index,  # child spans, if on
                                                 "ocrstream.regions": len(page.regions)})
                pages.append(Page(page_index=page_index, width=page.width, height=page.height,
                                  text_source=page.text_source, ink=UNSET if page.ink is None else page.ink))
                regions += await self.store_regions(doc_id, page_index, page)
        out = RegionsEvent(document_id=doc_id, document=event.document,
                           timestamps=msgspec.structs.replace(event.timestamps, preprocessed=events.now_iso()),
                           pages=pages, regions=regions, costs=event.costs)
        return [Output(events.REGIONS, doc_id, out)]

    async def store_regions(self, doc_id: str, page_index: int, page: PageResult) -> list[Region]:
        """Upload one page's crop pack (one object; none for a page without regions); returns its
        regions (the worker's region fields - line, order, box, quad, field or detection score,
        crop offset and shape - with ids, block and the pack's key added)."""
        if not page.regions:
            return []
        if page.text_source == "pdf-text":  # read from the PDF's text layer: no crops, the text travels along
            return [events.convert(Region, {
                **{k: v for k, v in region.items() if k not in ("text", "words", "confidence", "char_probs")},
                "crop_key": "", "layer_text": {"text": region["text"], "words": region["words"]}}, events.REGIONS)
                for region in page.regions]
        key = page_crops_key(doc_id, page_index)
        await self.store.put(key, page.crops)
        costs.add_bytes(written=len(page.crops))
        blocks = block_ids([r["box"] for r in page.regions], [r["line_index"] for r in page.regions])
        return [events.convert(Region, {"region_id": f"p{page_index}-r{region['order']}", "page_index": page_index,
                                        "block_index": block, "crop_key": key, **region}, events.REGIONS)
                for region, block in zip(page.regions, blocks)]

"""preprocess: original -> decoded pages -> text-line crops in the bucket -> ``ocr.regions.v1``.

Steps per document: download the original (claim check), decode safely (:mod:`.decode`:
sniffed type, pixel and page limits, truncation, PDF rendering), then cut regions: for a
document that names a fixed-layout template (:mod:`.templates`) its named field boxes, otherwise
text lines detected with the PP-OCRv6 DBNet model (:mod:`.detect`, perspective crop of each
quadrilateral). Store the crops as PNG
under ``crops/<document_id>/p<page>/r<order>.png`` and emit one event with every region's box
in page pixels, its visual line and its place in reading order.
CPU-heavy work runs in a worker thread so the Kafka heartbeats go on.
"""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
from aiokafka import ConsumerRecord

from services.core import events
from services.core.objectstore import ObjectStore
from services.core.stage import Output, Stage
from services.preprocess import cleanup
from services.preprocess.decode import Limits, decode_pages
from services.preprocess.detect import LineDetector, attach_colons, crop_line, visual_line_ids
from services.preprocess.layout import block_ids
from services.preprocess.templates import Template, get_template


def _box(quad: np.ndarray) -> list[float]:
    """Axis-aligned ``[x0, y0, x1, y1]`` (page px, 0.1 px precision) around a ``(4, 2)`` quad."""
    (x0, y0), (x1, y1) = quad.min(axis=0), quad.max(axis=0)
    return [round(float(v), 1) for v in (x0, y0, x1, y1)]


def template_regions(page: np.ndarray, page_index: int, template: Template) -> list[tuple[dict, np.ndarray]]:
    """Fixed layout: the template's regions of this page, cut without detection, with their fields."""
    height, width = page.shape[:2]
    regions = []
    for order, spec in enumerate(r for r in template.regions if r.page == page_index):
        x0, y0, x1, y1 = spec.pixel_box(width, height)
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
        region = {"line_index": order, "order": order, "box": _box(quad), "quad": quad.tolist(),
                  "field": spec.field()}
        regions.append((region, page[y0:y1, x0:x1]))
    return regions


def crop_key(document_id: str, page_index: int, order: int) -> str:
    """Object key of a region's PNG crop."""
    return f"crops/{document_id}/p{page_index:04d}/r{order:05d}.png"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``(H, W, 3)`` uint8 BGR image (lossless: the recogniser sees the same pixels)."""
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


class PreprocessStage(Stage):
    """Consumes ``ocr.ingested.v1``, produces ``ocr.regions.v1``."""

    name = "preprocess"
    input_topics = (events.INGESTED,)

    async def setup(self) -> None:
        self.store = ObjectStore(self.settings)
        await self.store.ensure_bucket()
        self.detector = await asyncio.to_thread(
            LineDetector, max_side=self.settings.detect_max_side, device=self.settings.device)

    def analyse(self, data: bytes, template: Template | None
                ) -> list[tuple[np.ndarray, list[tuple[dict, bytes]]]]:
        """Decode and cut regions (CPU-bound): per page its image and ``(region, png)`` pairs."""
        limits = Limits(self.settings.max_image_pixels, self.settings.max_pages, self.settings.pdf_dpi)
        pages = []
        for page_index, page in enumerate(decode_pages(data, limits)):
            regions = (template_regions(page, page_index, template) if template
                       else self.detected_regions(page))
            pages.append((page, [(region, encode_png(crop)) for region, crop in regions]))
        return pages

    def detected_regions(self, page: np.ndarray) -> list[tuple[dict, np.ndarray]]:
        """Free layout: DBNet text lines in reading order, each with its perspective crop.

        The page is cleaned first (``settings.cleanup_steps``, :mod:`.cleanup`); detection,
        colon attachment, visual lines and crops work on the cleaned page (bench_pages: crops
        from it read as well as from the original), ``box``/``quad`` are mapped back to
        ORIGINAL page pixels.
        """
        cleaned, transform = cleanup.apply(page, self.settings.cleanup_steps)
        lines = self.detector.detect(cleaned)
        quads = attach_colons(cleaned, [line.quad for line in lines])
        line_ids = visual_line_ids(quads)
        regions = []
        for order, (line, quad, line_id) in enumerate(zip(lines, quads, line_ids)):
            original = transform.to_original(quad).astype(float)
            region = {"line_index": int(line_id), "order": order, "box": _box(original),
                      "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in original],
                      "detection_score": round(float(line.score), 4)}
            regions.append((region, crop_line(cleaned, quad)))
        return regions

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        event = events.decode(events.INGESTED, record.value)
        doc_id = event["document_id"]
        name = event["document"].get("template")
        template = get_template(name, self.settings.templates_dir) if name else None
        data = await self.store.get(event["document"]["object_key"])
        analysed = await asyncio.to_thread(self.analyse, data, template)
        pages, regions, uploads = [], [], []
        for page_index, (image, page_regions) in enumerate(analysed):
            pages.append({"page_index": page_index, "width": int(image.shape[1]),
                          "height": int(image.shape[0])})
            blocks = block_ids([r["box"] for r, _ in page_regions], [r["line_index"] for r, _ in page_regions])
            for (region, png), block in zip(page_regions, blocks):
                key = crop_key(doc_id, page_index, region["order"])
                regions.append({"region_id": f"p{page_index}-r{region['order']}", "page_index": page_index,
                                "block_index": block, "crop_key": key, **region})
                uploads.append(self.store.put(key, png, "image/png"))
        await asyncio.gather(*uploads)
        out = {"schema": events.REGIONS, "document_id": doc_id, "document": event["document"],
               "timestamps": {**event["timestamps"], "preprocessed": events.now_iso()},
               "pages": pages, "regions": regions}
        return [Output(events.REGIONS, doc_id, out)]

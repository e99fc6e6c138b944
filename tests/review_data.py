"""Documents for the review tests: a rendered page stored as an original in the real object
store, and its recognized event (regions with low confidence and per-character probabilities)
stored by the real store stage into the real PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid

import cv2
import numpy as np

from ocrstream.contracts import events

#: Lines of the rendered page, with the confidence the fake reading claims (< 0.98: needs review).
LINES = [("TOTAL RM 12.50", 0.62), ("CASH 20.00", 0.71), ("CHANGE 7.50", 0.80), ("THANK YOU", 0.999)]
PAGE_W, PAGE_H = 900, 60 * len(LINES) + 40


def render_page(lines: list[str]) -> tuple[bytes, list[list[float]]]:
    """A white PNG page with one text line per 60 px, and each line's box ``[x0, y0, x1, y1]`` (page px)."""
    page = np.full((PAGE_H, PAGE_W, 3), 255, np.uint8)
    boxes = []
    for i, text in enumerate(lines):
        (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.2, 2)
        x, y = 30, 60 * i + 60
        cv2.putText(page, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2, cv2.LINE_AA)
        boxes.append([float(x - 4), float(y - h - 4), float(x + w + 4), float(y + base + 4)])
    ok, png = cv2.imencode(".png", page)
    assert ok
    return png.tobytes(), boxes


def recognized_event(doc_id: str, object_key: str, sha: str, size: int, boxes: list[list[float]],
                     template: str | None, extra_box: list[float] | None = None):
    """The recognized event of the rendered page: the reading of each line is its text with the
    first character misread as ``#`` (probability 0.3), the other characters at 0.99."""
    regions = []
    lines = LINES + ([("WHOLE PAGE", 0.5)] if extra_box else [])
    for i, ((text, confidence), box) in enumerate(zip(lines, boxes + ([extra_box] if extra_box else []))):
        reading = "#" + text[1:]
        regions.append({"region_id": f"p0-r{i}", "page_index": 0, "line_index": i, "order": i, "box": box,
                        "crop_key": f"crops/{doc_id}/p0000.crops", "text": reading, "confidence": confidence,
                        "char_probs": [0.3] + [0.99] * (len(reading) - 1)})
    return events.from_json_object(events.RECOGNIZED, {
        "schema": events.RECOGNIZED, "document_id": doc_id,
        "document": {"object_key": object_key, "content_sha256": sha, "size_bytes": size,
                     "filename": f"{doc_id}.png", "source": "cli", "template": template},
        "timestamps": {k: events.now_iso() for k in ("submitted", "ingested", "preprocessed", "recognized")},
        "pages": [{"page_index": 0, "width": PAGE_W, "height": PAGE_H}],
        "recognizer": {"name": "ppocr", "provider": "CPUExecutionProvider"}, "regions": regions})


async def store_review_documents(stage, store, n: int, *, prefix: str = "review",
                                 whole_page_region: bool = False) -> tuple[str, list[str]]:
    """Store ``n`` documents of the rendered page (original in S3, rows by ``stage``); returns
    ``(template tag, document ids)`` - the tag is the documents' template, unique to this call."""
    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    png, boxes = render_page([text for text, _ in LINES])
    sha = hashlib.sha256(png).hexdigest()
    key = f"originals/{sha[:2]}/{sha}"
    await store.put(key, png, "image/png")
    ids = [f"{tag}-d{i}" for i in range(n)]
    for doc_id in ids:
        extra = [0.0, 0.0, float(PAGE_W), float(PAGE_H)] if whole_page_region else None
        await stage.store_done(recognized_event(doc_id, key, sha, len(png), boxes, tag, extra))
    return tag, ids

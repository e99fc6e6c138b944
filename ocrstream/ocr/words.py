"""A line reading as region fields: text, confidence, per-character probabilities, word boxes.

One implementation for the recognize stage (it adds these fields to each region of its event)
and :class:`~ocrstream.ocr.predictor.OCRPipeline`. Imports nothing of another stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ocrstream.contracts.event_models import compact_probs

if TYPE_CHECKING:
    from ocrstream.ocr.recognition.recognizer import LineReading

__all__ = ["reading_fields", "word_boxes"]


def reading_fields(reading: LineReading, crop_width: int, quad: Sequence[Sequence[float]] | None) -> dict[str, Any]:
    """The fields a recognised region gains from its reading.

    Returns ``text``, ``confidence`` (4 decimals), ``char_probs`` (one per character, rounded
    down to 2 decimals by :func:`ocrstream.contracts.event_models.compact_probs`, which keeps the
    post-processor's threshold comparisons exact) and ``words``
    (:func:`word_boxes`; ``[]`` for a region without a ``quad``). ``crop_width`` is the width in
    px of the crop the recogniser read.
    """
    return {"text": reading.text, "confidence": round(reading.confidence, 4),
            "char_probs": compact_probs(reading.char_probs),
            "words": word_boxes(reading, crop_width, quad) if quad is not None else []}


def word_boxes(reading: LineReading, crop_width: int, quad: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Words of a line with page-pixel boxes from the recogniser's character positions.

    ``reading.char_x`` are character centres in crop pixels; a crop of width ``crop_width`` maps
    linearly onto the quad's top and bottom edges (clockwise from top-left, page pixels), as the
    perspective crop did. A word spans from half a character pitch (median centre spacing of
    the line) before its first character to half a pitch after its last.

    Returns one dict per word: ``text``, ``box`` ``[x0, y0, x1, y1]`` (page px, 0.1 px) and
    ``confidence`` (mean character probability, 4 decimals); ``[]`` for blank text.
    """
    if not reading.text.strip() or crop_width <= 0:
        return []
    tl, tr, br, bl = (np.asarray(p, dtype=float) for p in quad)
    xs = np.asarray(reading.char_x, dtype=float)
    pitch = float(np.median(np.diff(xs))) if len(xs) > 1 else crop_width / 2
    words, start = [], None
    for i, ch in enumerate(reading.text + " "):
        if ch != " " and start is None:
            start = i
        elif ch == " " and start is not None:
            t0 = max(0.0, xs[start] - pitch / 2) / crop_width
            t1 = min(float(crop_width), xs[i - 1] + pitch / 2) / crop_width
            corners = np.array([tl + t0 * (tr - tl), tl + t1 * (tr - tl), bl + t0 * (br - bl), bl + t1 * (br - bl)])
            probs = reading.char_probs[start:i]
            words.append({"text": reading.text[start:i],
                          "box": [round(float(v), 1) for v in (*corners.min(axis=0), *corners.max(axis=0))],
                          "confidence": round(float(np.mean(probs)), 4)})
            start = None
    return words

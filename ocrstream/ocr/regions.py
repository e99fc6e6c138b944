"""One decoded page -> its text regions and their crops (CPU work, run in the decoder worker).

Fixed-layout documents (a template, :mod:`.templates`) give their named field boxes, cut without
detection; free layout gives DBNet text lines (:mod:`.detect`) on the cleaned page
(:mod:`.cleanup`), colons attached, grouped into visual lines, each with its perspective crop.
Boxes are in ORIGINAL page pixels. Crops leave as uint8 arrays; the decoder worker packs a page's
crops into one object (:mod:`ocrstream.storage.crops`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ocrstream.ocr import cleanup
from ocrstream.ocr.detection import LineDetector, attach_colons, crop_line, visual_line_ids
from ocrstream.ocr.templates import Template

__all__ = ["CutRegion", "cut_regions", "detected_regions", "template_regions"]

#: A region cut from a page before it is read: (its event fields, its (h, w, 3) uint8 BGR crop). Not
#: :class:`ocrstream.ocr.document.Region` (a read region of the result tree).
CutRegion = tuple[dict[str, Any], np.ndarray]
#: Timed steps of a page, ``(name, start_ns, end_ns)`` (``time.time_ns()``): ``cleanup``,
#: ``detection``, ``crop`` (the stage turns them into trace spans, ocrstream/streaming/tracing.py).
Phases = list[tuple[str, int, int]]


def _box(quad: np.ndarray) -> list[float]:
    """Axis-aligned ``[x0, y0, x1, y1]`` (page px, 0.1 px precision) around a ``(4, 2)`` quad."""
    (x0, y0), (x1, y1) = quad.min(axis=0), quad.max(axis=0)
    return [round(float(v), 1) for v in (x0, y0, x1, y1)]


def template_regions(page: np.ndarray, page_index: int, template: Template) -> list[CutRegion]:
    """Fixed layout: the template's regions of this page, cut without detection, with their fields."""
    height, width = page.shape[:2]
    regions = []
    for order, spec in enumerate(r for r in template.regions if r.page == page_index):
        x0, y0, x1, y1 = spec.pixel_box(width, height)
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)  # >= 1 px even on a tiny page (x0 < width always)
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
        region = {"line_index": order, "order": order, "box": _box(quad), "quad": quad.tolist(),
                  "field": spec.field()}
        regions.append((region, page[y0:y1, x0:x1]))
    return regions


def detected_regions(page: np.ndarray, detector: LineDetector, cleanup_steps: str | Sequence[str],
                     phases: Phases | None = None, measures: dict[str, float] | None = None) -> list[CutRegion]:
    """Free layout: DBNet text lines in reading order, each with its perspective crop.

    The page is cleaned first (``cleanup_steps``, :mod:`.cleanup`); detection, colon
    attachment, visual lines and crops work on the cleaned page (bench_pages: crops from it
    read as well as from the original), ``box``/``quad`` are mapped back to ORIGINAL page pixels.
    ``phases``, when given, gets the ``cleanup``, ``detection`` and ``crop`` steps' wall times;
    ``measures``, when given, gets ``ink``: :func:`ocrstream.ocr.cleanup.ink_fraction` of the
    cleaned page (the store flags a page with ink and no text for review).
    """
    t0 = time.time_ns()
    result = cleanup.clean(page, cleanup_steps)
    cleaned, transform = result.page, result.transform
    if measures is not None:
        measures["ink"] = round(result.ink if result.ink is not None else cleanup.ink_fraction(cleaned), 6)
    t1 = time.time_ns()
    lines = detector.detect(cleaned, result.glyph_height)
    quads = attach_colons(cleaned, [line.quad for line in lines], result.ink_mask, result.ink_components)
    line_ids = visual_line_ids(quads)
    t2 = time.time_ns()
    regions = []
    for order, (line, quad, line_id) in enumerate(zip(lines, quads, line_ids)):
        original = transform.to_original(quad).astype(float)
        region = {"line_index": int(line_id), "order": order, "box": _box(original),
                  "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in original],
                  "detection_score": round(float(line.score), 4)}
        regions.append((region, crop_line(cleaned, quad)))
    if phases is not None:
        phases += [("cleanup", t0, t1), ("detection", t1, t2), ("crop", t2, time.time_ns())]
    return regions


def cut_regions(page: np.ndarray, page_index: int, template: Template | None, detector: LineDetector | None,
                cleanup_steps: str | Sequence[str], phases: Phases | None = None,
                measures: dict[str, float] | None = None) -> list[CutRegion]:
    """The regions of one page with their ``(h, w, 3)`` uint8 crops (template if given, else
    detection); ``phases``, when given, gets the timed steps (:data:`Phases`), ``measures`` the
    page's ``ink`` (detection only, :func:`detected_regions`).

    Raises:
        ValueError: no template and no detector.
    """
    if template is not None:
        t0 = time.time_ns()
        regions = template_regions(page, page_index, template)
        if phases is not None:
            phases.append(("crop", t0, time.time_ns()))
        return regions
    if detector is not None:
        return detected_regions(page, detector, cleanup_steps, phases, measures)
    raise ValueError("a page without a template needs a line detector")


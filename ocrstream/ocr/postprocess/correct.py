"""Post-processing of one recognised region: corrected and raw text, typed value, review flag.

One implementation for the store stage (before it persists a region) and
:class:`~ocrstream.ocr.predictor.OCRPipeline`; the rules are :class:`ocrstream.ocr.postprocess.processor.PostProcessor`'s.
"""

from __future__ import annotations

from typing import Any

from ocrstream.ocr.document import FieldSpec
from ocrstream.ocr.postprocess.processor import PostProcessor

__all__ = ["correct_region"]


def correct_region(postprocessor: PostProcessor, region: dict[str, Any]) -> dict[str, Any]:
    """``region`` (with ``text``, ``confidence``, optional ``char_probs`` and template ``field``)
    with corrected ``text`` and ``raw_text``, ``value``, ``valid``, ``reason``, ``needs_review``
    (field rules when it holds a template field). A new dict; ``region`` is not changed.

    A region read from a PDF's own text layer (``source`` ``pdf-text``) is exact: its text is kept
    as it is (``raw_text`` = ``text``, never needs review).

    Raises:
        ValueError: ``char_probs`` does not have one entry per character of ``text``.
    """
    if region.get("source") == "pdf-text":
        return {**region, "raw_text": region["text"], "value": None, "valid": None, "reason": None,
                "needs_review": False}
    field = FieldSpec(**region["field"]) if "field" in region else None
    c = postprocessor.correct(region["text"], region["confidence"], region.get("char_probs"), field)
    return {**region, "raw_text": c.raw_text, "text": c.text, "value": c.value, "valid": c.valid,
            "reason": c.reason, "needs_review": c.needs_review}

"""The OCR pipeline as one pure object, and the steps the stages share with it.

:class:`~ocrstream.ocr.predictor.OCRPipeline` (after docTR's ``OCRPredictor``: detect -> crop ->
recognise -> build, no I/O) turns a document's bytes into a :class:`ocrstream.ocr.document.Document`.
The stages run the same steps, one process each, and only move bytes and events between them:

* decode, clean-up, detect, crop: :mod:`ocrstream.ocr.decode`,
  :mod:`ocrstream.ocr.regions` (preprocess stage, in its decoder worker);
* recognise and word boxes: :func:`ocrstream.ocr.recognition.recognizer.load_recognizer`,
  :func:`ocrstream.ocr.words.reading_fields` (recognize stage);
* blocks: :func:`ocrstream.ocr.layout.block_ids` (preprocess stage);
* post-process and build: :func:`ocrstream.ocr.postprocess.correct.correct_region`,
  :meth:`ocrstream.ocr.document.Document.from_results` (store stage).

The step modules here (:mod:`.words`, :mod:`.correct`) import nothing of another stage, so a
stage may import them; only :mod:`.ocr` composes every stage's parts. ``OCRPipeline`` is
imported lazily (PEP 562) so that importing a step module does not load the whole pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocrstream.ocr.predictor import OCRPipeline

__all__ = ["OCRPipeline"]


def __getattr__(name: str) -> Any:
    if name == "OCRPipeline":
        from ocrstream.ocr.predictor import OCRPipeline

        return OCRPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

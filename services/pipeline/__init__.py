"""The OCR pipeline as one pure object, and the steps the stages share with it.

:class:`~services.pipeline.ocr.OCRPipeline` (after docTR's ``OCRPredictor``: detect -> crop ->
recognise -> build, no I/O) turns a document's bytes into a :class:`services.document.Document`.
The stages run the same steps, one process each, and only move bytes and events between them:

* decode, clean-up, detect, crop: :mod:`services.preprocess.decode`,
  :mod:`services.preprocess.regions` (preprocess stage, in its decoder worker);
* recognise and word boxes: :func:`services.recognize.recognizer.load_recognizer`,
  :func:`services.pipeline.words.reading_fields` (recognize stage);
* blocks: :func:`services.preprocess.layout.block_ids` (preprocess stage);
* post-process and build: :func:`services.pipeline.correct.correct_region`,
  :meth:`services.document.Document.from_results` (store stage).

The step modules here (:mod:`.words`, :mod:`.correct`) import nothing of another stage, so a
stage may import them; only :mod:`.ocr` composes every stage's parts. ``OCRPipeline`` is
imported lazily (PEP 562) so that importing a step module does not load the whole pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.pipeline.ocr import OCRPipeline

__all__ = ["OCRPipeline"]


def __getattr__(name: str) -> Any:
    if name == "OCRPipeline":
        from services.pipeline.ocr import OCRPipeline

        return OCRPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

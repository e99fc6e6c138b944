"""ocrstream: event-driven streaming OCR.

The library people import::

    from ocrstream import OCRPipeline, Document

* :mod:`ocrstream.ocr` -- the whole OCR path of a document (decode, clean-up, detection,
  recognition, layout and word boxes, post-processing, the predictor, exports, evaluation);
  imports no Kafka, S3 or SQL client;
* :mod:`ocrstream.streaming` -- the stage runtime: Kafka, event models, metrics, health, auth;
* :mod:`ocrstream.storage` -- object store, crop packs, the PostgreSQL repository and search;
* :mod:`ocrstream.client` -- submitting documents and waiting for their results;
* :mod:`ocrstream.ops` -- status, dead letters, audit, the stage launcher, the demo;
* :mod:`ocrstream.cli` -- the ``ocrstream`` command;
* :mod:`ocrstream.devstack` -- the embedded local stack (Kafka API, S3, PostgreSQL);
* :mod:`ocrstream.training` -- synthetic lines, fine-tuning, evaluation, the TrOCR exporter.

The four pipeline stages themselves live in ``services/<stage>/`` (thin adapters over this package).
``OCRPipeline`` and ``Document`` are imported lazily (PEP 562), so ``import ocrstream.settings``
does not load the models' runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocrstream.ocr.document import Document
    from ocrstream.ocr.predictor import OCRPipeline

__all__ = ["Document", "OCRPipeline"]


def __getattr__(name: str) -> Any:
    if name == "OCRPipeline":
        from ocrstream.ocr.predictor import OCRPipeline

        return OCRPipeline
    if name == "Document":
        from ocrstream.ocr.document import Document

        return Document
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""OCRPipeline: a document's bytes -> :class:`ocrstream.ocr.document.Document`, in one process, no I/O.

After docTR's ``OCRPredictor`` (``doctr/models/predictor/pytorch.py``: detect -> crop ->
recognise -> build). The parts are the ones the stages run, one implementation each:

=================  ==============================================  =======================
step               function / object                                stage that runs it
=================  ==============================================  =======================
decode (budget)    :func:`ocrstream.ocr.decode.open_document`  preprocess (worker)
clean-up, detect,  :func:`ocrstream.ocr.regions.cut_regions`    preprocess (worker)
crop / template    (``cleanup``, ``LineDetector``, templates)
recognise, words   ``Recognizer.recognize``,                          recognize
                   :func:`ocrstream.ocr.words.reading_fields`
blocks             :func:`ocrstream.ocr.layout.block_ids`       preprocess
post-process       :func:`ocrstream.ocr.postprocess.correct.correct_region`   store
build              :meth:`ocrstream.ocr.document.Document.from_results`    store
fields             :func:`ocrstream.ocr.receipt_fields.document_fields`    store
=================  ==============================================  =======================

Bounded as the stages are: the document's bytes (``max_document_bytes``), then its pages and
pixels from the headers before any pixel is decoded (:class:`ocrstream.ocr.decode.Budget`).
Unlike the preprocess stage, pages are decoded in this process (no worker with a memory limit
and timeout): the header checks refuse bombs, a decoder crash ends the calling process.

Recognition is one recogniser call per page (the recognize stage batches the crops of every
document of a poll; the readings are the same crop by crop).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from ocrstream.errors import DocumentTooLargeError
from ocrstream.ocr import cleanup, pdftext
from ocrstream.ocr.decode import Budget, OpenedDocument, open_document
from ocrstream.ocr.detection import LineDetector
from ocrstream.ocr.document import Document
from ocrstream.ocr.layout import block_ids
from ocrstream.ocr.postprocess.correct import correct_region
from ocrstream.ocr.postprocess.processor import PostProcessor
from ocrstream.ocr.receipt_fields import document_fields
from ocrstream.ocr.recognition.recognizer import Recognizer
from ocrstream.ocr.recognition.registry import load_recognizer
from ocrstream.ocr.regions import CutRegion, cut_regions
from ocrstream.ocr.runtime.opencv_threads import limit_opencv_threads
from ocrstream.ocr.templates import Template, get_template
from ocrstream.ocr.words import reading_fields

__all__ = ["STEPS", "OCRPipeline"]

#: the steps whose CPU time :attr:`OCRPipeline.cpu_s` accumulates.
STEPS = ("decode", "regions", "recognize", "build")


class OCRPipeline:
    """Decode -> clean-up -> detect -> crop -> recognise -> word boxes -> blocks -> post-process.

    Args:
        recognizer: a :class:`ocrstream.ocr.recognition.recognizer.Recognizer` (``load_recognizer``).
        detector: the DBNet line detector; None serves template documents only.
        postprocessor: corrections and field validation (as the store stage); None keeps the
            recogniser's raw text (the accuracy benchmarks score raw readings).
        cleanup_steps: page clean-up before detection (:func:`ocrstream.ocr.cleanup.apply`).
        budget: pages and pixels one document may have, checked from its headers (None: the defaults).
        max_document_bytes: the largest document accepted, bytes.
        templates_dir: extra template folder for template names (``OCRSTREAM_TEMPLATES_DIR``).
        receipt_fields: find receipt fields (vendor, date, total, ...) in documents without a
            template (``OCRSTREAM_RECEIPT_FIELDS``; :mod:`ocrstream.ocr.receipt_fields`).
        pdf_text: PDF text layers, page by page (``OCRSTREAM_PDF_TEXT``): ``auto`` reads a page
            whose text the PDF draws visibly from the PDF itself and OCRs the others, ``text``
            trusts any text layer, ``ocr`` always OCRs (:mod:`ocrstream.ocr.pdftext`).
        max_pdf_page_chars: the most characters of one page's text layer read
            (``OCRSTREAM_PDF_MAX_PAGE_CHARS``); a larger layer is not read and the page is OCRed.

    Attributes:
        text_sources: pages so far per text source (``{"pdf-text": n, "ocr": m}``).
        cpu_s: CPU seconds (``time.process_time``: every thread of the process) spent so far
            per step of :data:`STEPS` (``regions`` = clean-up + detection + cropping).

    Example:
        >>> pipeline = OCRPipeline.from_settings(get_settings())  # doctest: +SKIP
        >>> pipeline(Path("samples/receipt.png").read_bytes()).render_text()  # doctest: +SKIP
    """

    def __init__(self, recognizer: Recognizer, detector: LineDetector | None = None,
                 postprocessor: PostProcessor | None = None, *,
                 cleanup_steps: str | Sequence[str] = cleanup.DEFAULT_STEPS, budget: Budget | None = None,
                 max_document_bytes: int = 64 * 1024 * 1024, templates_dir: str | None = None,
                 receipt_fields: bool = True, pdf_text: str = "auto",
                 max_pdf_page_chars: int = pdftext.MAX_PAGE_CHARS) -> None:
        pdftext.decide(None, pdf_text)  # ValueError for an unknown mode, now rather than at the first PDF
        self.pdf_text, self.max_pdf_page_chars = pdf_text, max_pdf_page_chars
        self.recognizer, self.detector, self.postprocessor = recognizer, detector, postprocessor
        self.receipt_fields = receipt_fields
        self.cleanup_steps = cleanup.parse_steps(cleanup_steps)
        self.budget, self.max_document_bytes, self.templates_dir = budget or Budget(), max_document_bytes, templates_dir
        self.cpu_s: dict[str, float] = dict.fromkeys(STEPS, 0.0)
        self.text_sources: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Any, *, postprocess: bool = True, **overrides: Any) -> OCRPipeline:
        """The pipeline the stages run, configured by :class:`ocrstream.settings.Settings`:
        the same recogniser options as the recognize stage, detector and clean-up as the
        preprocess stage's worker, budget and post-processing rules as preprocess and store,
        and, as they do, OpenCV's threads for this process (``OCRSTREAM_OPENCV_THREADS``,
        :mod:`ocrstream.ocr.runtime.opencv_threads`). ``overrides`` replace constructor arguments
        (e.g. ``cleanup_steps``)."""
        limit_opencv_threads(settings.opencv_threads)
        options = {"device": settings.device, "max_batch_size": settings.batch_max_size,
                   "max_chars": settings.max_region_chars}
        if settings.recognizer == "ppocr" and settings.ppocr_model:
            options["model"] = settings.ppocr_model
        parts: dict[str, Any] = {
            "cleanup_steps": settings.cleanup_steps, "budget": Budget.from_settings(settings),
            "max_document_bytes": settings.max_document_bytes, "templates_dir": settings.templates_dir,
            "receipt_fields": settings.receipt_fields,
            "pdf_text": settings.pdf_text, "max_pdf_page_chars": settings.pdf_max_page_chars}
        parts.update(overrides)
        if "recognizer" not in parts:
            parts["recognizer"] = load_recognizer(settings.recognizer, **options)
        if "detector" not in parts:
            parts["detector"] = LineDetector(max_side=settings.detect_max_side, glyph_px=settings.detect_glyph_px,
                                             min_side=settings.detect_min_side, device=settings.device)
        if "postprocessor" not in parts:
            parts["postprocessor"] = PostProcessor(
                review_threshold=settings.review_threshold,
                enabled_rules=[r for r in settings.postprocess_rules.split(",") if r]) if postprocess else None
        return cls(**parts)

    def __call__(self, data: bytes, template: Template | str | None = None, *, document_id: str = "document",
                 filename: str | None = None) -> Document:
        """OCR one document (image or PDF bytes) -> a ``done`` :class:`Document`.

        ``template`` (a :class:`Template` or its name) cuts its named fields instead of detecting
        lines; ``document_id`` and ``filename`` label the result (hOCR title, ALTO file name).
        Each page records where its text came from (``text_source``: ``pdf-text`` or ``ocr``,
        :meth:`page_text_source`); a page read from its PDF text layer is not rendered.

        Raises:
            DocumentTooLargeError: over ``max_document_bytes`` or the budget.
            UnknownTemplateError: no template of that name.
            The typed errors of :func:`ocrstream.ocr.decode.open_document` (EmptyDocumentError,
            NotAnImageError, TruncatedImageError, CorruptImageError, EncryptedDocumentError).
            ValueError: a page without a template and no detector.
        """
        self.check_size(len(data))
        if isinstance(template, str):
            template = get_template(template, self.templates_dir)
        pages, regions = [], []
        with self._timed("decode"):
            document = open_document(data, self.budget)
        with document:
            for page_index in range(len(document)):
                source, _, layer = self.page_text_source(document, page_index, template)
                if layer is not None:
                    width, height = document.page_sizes[page_index]
                    regions += pdftext.layer_regions(layer, page_index)
                else:
                    with self._timed("decode"):
                        page = document.page(page_index)
                    height, width = page.shape[:2]
                    regions += self.read_page(page_index, self.cut(page, page_index, template))
                pages.append({"page_index": page_index, "width": int(width), "height": int(height),
                              "text_source": source})
        return self.build(document_id, pages, regions, filename)

    def page_text_source(self, document: OpenedDocument, page_index: int, template: Template | None = None
                         ) -> tuple[str, str, pdftext.TextLayer | None]:
        """(``"pdf-text"`` or ``"ocr"``, the reason, the text layer to use or None) for one page
        (:func:`ocrstream.ocr.pdftext.decide` with :attr:`pdf_text`); template documents are always
        OCRed (their fields are cut by position). Counted in :attr:`text_sources`."""
        layer = None
        if self.pdf_text != "ocr" and template is None and document.kind == "pdf":
            with self._timed("decode"):
                layer = document.text_layer(page_index, self.max_pdf_page_chars)
        source, reason = pdftext.decide(layer, self.pdf_text if template is None else "ocr")
        self.text_sources[source] = self.text_sources.get(source, 0) + 1
        return source, reason, layer if source == "pdf-text" else None

    def check_size(self, n_bytes: int) -> None:
        """Raise DocumentTooLargeError when a document of ``n_bytes`` is over ``max_document_bytes``."""
        if n_bytes > self.max_document_bytes:
            raise DocumentTooLargeError(f"document is {n_bytes} bytes; the limit is "
                                        f"{self.max_document_bytes} (OCRSTREAM_MAX_DOCUMENT_BYTES)")

    def pages(self, data: bytes) -> Iterator[Any]:
        """Pages of ``data``, ``(H, W, 3)`` uint8 BGR, decoded one at a time after the whole budget
        was checked from the headers (errors: :meth:`__call__`)."""
        with self._timed("decode"):
            document = open_document(data, self.budget)
        with document:
            for index in range(len(document)):
                with self._timed("decode"):
                    page = document.page(index)
                yield page

    def cut(self, page: Any, page_index: int, template: Template | None = None) -> list[CutRegion]:
        """A page's regions with their crops: the template's fields, else clean-up, DBNet lines
        and perspective crops (:func:`ocrstream.ocr.regions.cut_regions`)."""
        with self._timed("regions"):
            return cut_regions(page, page_index, template, self.detector, self.cleanup_steps)

    def read_page(self, page_index: int, regions: Sequence[CutRegion]) -> list[dict[str, Any]]:
        """Recognise a page's regions -> their region dicts as the recognize stage emits them
        (``region_id``, ``page_index``, ``block_index``, the cut fields, text, confidence,
        ``char_probs``, ``words``), in reading order."""
        fields = [r for r, _ in regions]
        crops = [c for _, c in regions]
        with self._timed("recognize"):
            readings = self.recognizer.recognize(crops) if crops else []
        blocks = block_ids([f["box"] for f in fields], [f["line_index"] for f in fields])
        return [{"region_id": f"p{page_index}-r{f['order']}", "page_index": page_index, "block_index": block, **f,
                 **reading_fields(reading, crop.shape[1], f.get("quad")), "source": "ocr"}
                for f, crop, reading, block in zip(fields, crops, readings, blocks)]

    def build(self, document_id: str, pages: list[dict[str, Any]], regions: list[dict[str, Any]],
              filename: str | None = None) -> Document:
        """Post-process every region (when a post-processor is set), build the Document
        (Document > Page > Block > Line > Region > Word) and its ``fields`` as the store stage
        does: template fields from their regions, else receipt fields (when ``receipt_fields``)."""
        with self._timed("build"):
            if self.postprocessor is not None:
                regions = [correct_region(self.postprocessor, r) for r in regions]
            doc = Document.from_results({"document_id": document_id, "status": "done", "pages": pages,
                                         "regions": regions, "document": {"filename": filename}})
            fields = document_fields(doc, regions, receipts=self.receipt_fields)
            return replace(doc, fields=fields) if fields else doc

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.cpu_s[step] += time.process_time() - start

"""OCRPipeline (ocrstream/ocr/): real images through the real models, and the stages' own code
path (decoder worker -> preprocess event fields -> recognize event fields -> store post-processing
-> Document) giving exactly what the pipeline gives. No stack: the stages' I/O is not under test
here (test_pipeline_e2e.py runs the stages as processes); an in-memory object store carries the
crops between the stages' methods.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DocumentRef, Page, RegionsEvent, Timestamps
from ocrstream.errors import DocumentTooLargeError, TruncatedImageError, UnknownTemplateError
from ocrstream.ocr.decode import Budget
from ocrstream.ocr.document import Document
from ocrstream.ocr.postprocess.correct import correct_region
from ocrstream.ocr.predictor import STEPS, OCRPipeline
from ocrstream.settings import Settings
from ocrstream.storage.crops import region_crops
from services.preprocess.stage import PreprocessStage
from services.preprocess.worker import DecoderPool
from services.recognize.stage import RecognizeStage, _from_layer
from tools.render_samples import encode, render_page

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
LINES = ["INVOICE NO 20931", "DATE 02/11/2026", "TOTAL RM 125.40"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(device="cpu")


@pytest.fixture(scope="module")
def ocr_pipeline(settings) -> OCRPipeline:
    return OCRPipeline.from_settings(settings)


class MemoryStore:
    """The object store's get/put, in memory (transport between the stages' methods)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = data

    async def get(self, key: str) -> bytes:
        return self.objects[key]


async def stages_document(settings: Settings, recognizer, postprocessor, data: bytes) -> tuple[Document, list[dict]]:
    """``data`` through the stages' own code: the decoder worker, PreprocessStage.store_regions,
    RecognizeStage.output (crops from the store as recognize reads them), the store's
    post-processing and Document building. Returns the Document and the recognised regions."""
    preprocess, recognize = PreprocessStage(settings), RecognizeStage(settings)
    preprocess.store = MemoryStore()
    recognize.recognizer, recognize.model_version = recognizer, None
    pool = DecoderPool.from_settings(settings, timeout_s=120)
    try:
        pages, regions = [], []
        async with pool.open(data) as document:
            for index in range(len(document.page_sizes)):
                page = await document.page(index, None)
                pages.append(Page(page_index=index, width=page.width, height=page.height,
                                  text_source=page.text_source))
                regions += await preprocess.store_regions("doc", index, page)
    finally:
        pool.close()
    crops = region_crops([r for r in regions if not _from_layer(r)], preprocess.store.objects)
    event = RegionsEvent(document_id="doc", document=DocumentRef(object_key="originals/doc", content_sha256="0" * 64,
                                                                 size_bytes=len(data), source="cli"),
                         timestamps=Timestamps(ingested=events.now_iso()), pages=pages, regions=regions)
    recognized = recognize.output(event, recognizer.recognize(crops), [c.shape[1] for c in crops]).event
    recognized_regions = [events.to_json_object(r) for r in recognized.regions]
    stored = [correct_region(postprocessor, r) for r in recognized_regions]
    document = Document.from_results({**events.to_json_object(recognized), "status": "done", "regions": stored})
    return document, recognized_regions


def test_the_stages_and_the_pipeline_read_a_page_alike(settings, ocr_pipeline):
    data = (SAMPLES / "receipt.png").read_bytes()
    staged, staged_regions = asyncio.run(
        stages_document(settings, ocr_pipeline.recognizer, ocr_pipeline.postprocessor, data))
    ocr_pipeline.postprocessor, postprocessor = None, ocr_pipeline.postprocessor
    try:
        raw = ocr_pipeline(data, document_id="doc")
    finally:
        ocr_pipeline.postprocessor = postprocessor
    whole = ocr_pipeline(data, document_id="doc")
    assert "CORNER GROCER" in whole.render_text() and "TOTAL" in whole.render_text()
    assert whole.render_text() == staged.render_text()
    assert whole.pages == staged.pages  # blocks, lines, regions, word boxes and confidences
    # region by region, the recognize stage's event fields (all but the object key of its crop)
    raw_regions = [r for page in raw.pages for line in page.lines for r in line.regions]
    assert [r.region_id for r in raw_regions] == [r["region_id"] for r in staged_regions]
    assert [r.text for r in raw_regions] == [r["text"] for r in staged_regions]
    assert [r.box for r in raw_regions] == [tuple(r["box"]) for r in staged_regions]


def test_pipeline_reads_every_page_of_a_pdf_with_word_boxes_in_the_page(ocr_pipeline):
    doc = ocr_pipeline((SAMPLES / "memo.pdf").read_bytes(), document_id="memo", filename="memo.pdf")
    assert doc.status == "done" and len(doc.pages) == 2
    assert all(page.text for page in doc.pages) and "\f" in doc.render_text()
    for page in doc.pages:
        words = [w for line in page.lines for w in line.words]
        assert words
        for w in words:
            x0, y0, x1, y1 = w.box
            assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height, (w, page.width, page.height)
            assert 0.0 <= w.confidence <= 1.0
    assert doc.meta["document"] == {"filename": "memo.pdf"}


def test_pipeline_cuts_template_fields_and_validates_them(ocr_pipeline):
    doc = ocr_pipeline((SAMPLES / "lab-report.jpg").read_bytes(), "lab-report")
    fields = {r.field["name"]: r.text for page in doc.pages for line in page.lines for r in line.regions}
    assert {"patient_id", "haemoglobin"} <= fields.keys()
    with pytest.raises(UnknownTemplateError):
        ocr_pipeline((SAMPLES / "lab-report.jpg").read_bytes(), "no-such-template")


def test_pipeline_keeps_the_stages_budgets(settings, ocr_pipeline):
    two_pages = (SAMPLES / "memo.pdf").read_bytes()
    tight = OCRPipeline(ocr_pipeline.recognizer, ocr_pipeline.detector, budget=Budget(max_pages=1))
    with pytest.raises(DocumentTooLargeError, match="OCRSTREAM_MAX_PAGES"):
        tight(two_pages)
    small = OCRPipeline(ocr_pipeline.recognizer, ocr_pipeline.detector, max_document_bytes=1000)
    with pytest.raises(DocumentTooLargeError, match="OCRSTREAM_MAX_DOCUMENT_BYTES"):
        small(two_pages)
    with pytest.raises(DocumentTooLargeError, match="OCRSTREAM_MAX_IMAGE_PIXELS"):
        OCRPipeline(ocr_pipeline.recognizer, ocr_pipeline.detector, budget=Budget(max_page_pixels=10_000))(
            encode(render_page(LINES)))
    with pytest.raises(TruncatedImageError):
        ocr_pipeline((SAMPLES / "truncated.jpg").read_bytes())
    before = dict(ocr_pipeline.cpu_s)
    ocr_pipeline(encode(render_page(LINES)))
    assert all(ocr_pipeline.cpu_s[s] > before[s] for s in ("decode", "regions", "recognize")), ocr_pipeline.cpu_s
    assert set(ocr_pipeline.cpu_s) == set(STEPS)


STAGE_PACKAGES = ("ingest", "preprocess", "recognize", "store")


@pytest.mark.parametrize("stage", STAGE_PACKAGES)
def test_no_stage_imports_another_stage_or_the_whole_pipeline(stage):
    """A stage's modules import the library (ocrstream.*) and their own package, never another stage
    nor the in-process predictor (a stage runs its own steps, one process each)."""
    bad = []
    for path in (REPO / "services" / stage).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            imported = names + ([f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else [])
            for name in imported:
                other = [s for s in STAGE_PACKAGES if s != stage and name.startswith(f"services.{s}")]
                if other or name.startswith("ocrstream.ocr.predictor") or name.endswith(".OCRPipeline"):
                    bad.append(f"{path.relative_to(REPO)}: {name}")
    assert not bad

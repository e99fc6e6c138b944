"""Born-digital PDF pages: read from their text layer vs rendered and OCRed (issue 20).

Each SROIE dev receipt's ground-truth lines are typeset as a born-digital PDF page (fpdf2,
Helvetica, each line at its annotated box, the page the size of the scan at 200 dpi), so the
pages look like the receipts a point-of-sale system exports. Every page goes through
:class:`ocrstream.ocr.OCRPipeline` twice, in the same run, alternating: ``OCRSTREAM_PDF_TEXT=auto``
(read from the PDF) and ``ocr`` (rendered at 200 dpi, the default clean-up, DBNet, recogniser).
Printed: CER ci of each against pypdfium2's own extraction of the page (lines whitespace-
collapsed; :mod:`ocrstream.ocr.evaluation`), CPU-ms per page (``time.process_time``, model
loading excluded) and their ratio.

    python bench/bench_pdf_text.py [--data DIR] [--limit N] [--threads T]

Skipped cleanly when the dev set is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pypdfium2 as pdfium
from fpdf import FPDF

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pages import DATA, dev_pages  # noqa: E402

from ocrstream.ocr.detection import LineDetector  # noqa: E402
from ocrstream.ocr.evaluation import cer  # noqa: E402
from ocrstream.ocr.predictor import OCRPipeline  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402

PT_PER_PX = 72 / 200  # the scans' pixels as points of a 200-dpi page


def typeset(record: dict) -> bytes:
    """The record's ground-truth lines as a one-page born-digital PDF, each at its box."""
    pdf = FPDF(unit="pt", format=(record["width"] * PT_PER_PX, record["height"] * PT_PER_PX))
    pdf.set_auto_page_break(False)
    pdf.add_page()
    for line in record["lines"]:
        x0, y0, x1, y1 = (v * PT_PER_PX for v in line["box"])
        text = line["text"].encode("latin-1", "replace").decode("latin-1")
        size = max(4.0, 0.8 * (y1 - y0))
        pdf.set_font("Helvetica", size=size)
        width = pdf.get_string_width(text)
        if width > x1 - x0 > 0:  # condensed to fit its box, as receipt fonts are
            pdf.set_font("Helvetica", size=size * (x1 - x0) / width)
        pdf.text(x0, y1 - 0.2 * (y1 - y0), text)
    return bytes(pdf.output())


def pdfium_text(data: bytes) -> str:
    text = pdfium.PdfDocument(data)[0].get_textpage().get_text_range()
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("OCRSTREAM_SROIE_DEV", DATA)))
    parser.add_argument("--limit", type=int, default=20, help="first N dev pages (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    records = dev_pages(args.data)
    if records is None:
        return 0
    records = records[: args.limit]
    pipeline = OCRPipeline(load_recognizer("ppocr", device="cpu", threads=args.threads),
                           LineDetector(device="cpu", threads=args.threads))
    hyps: dict[str, list[str]] = {"auto": [], "ocr": []}
    cpu = dict.fromkeys(hyps, 0.0)
    refs, sources = [], []
    for record in records:
        data = typeset(record)
        refs.append(pdfium_text(data))
        for mode in hyps:
            pipeline.pdf_text = mode
            start = time.process_time()
            doc = pipeline(data)
            cpu[mode] += time.process_time() - start
            hyps[mode].append(doc.render_text())
            if mode == "auto":
                sources.append(doc.pages[0].text_source)
    n = len(records)
    print(f"pages: {n}  threads={args.threads}  text sources (auto): "
          f"{ {s: sources.count(s) for s in set(sources)} }")
    print("| OCRSTREAM_PDF_TEXT | CER ci vs pypdfium2's text | CPU-ms per page | x less CPU than ocr |")
    print("|---|---|---|---|")
    for mode in hyps:
        print(f"| {mode} | {100 * cer(hyps[mode], refs):.3f} % | {1000 * cpu[mode] / n:.1f} "
              f"| {cpu['ocr'] / max(cpu[mode], 1e-9):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

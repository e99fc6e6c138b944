"""End-to-end page benchmark on the SROIE dev receipts through :class:`ocrstream.ocr.OCRPipeline`.

Data: ``sroie-dev/pages.jsonl`` (60 receipts, JPEG; see its README) under ``--data`` (default
``<repo>/../shared/data/sroie-dev``, or ``<repo>/../../shared/...`` from a worktree one level
deeper); skipped cleanly when absent.
Per page: the pipeline whole (decode with the budget checks, clean-up, DBNet lines, crops,
recognition with ``load_recognizer("ppocr")``, word boxes, blocks; the same parts the stages run),
then the Document's text (a visual line's regions joined by " ", lines by "\\n") scored for page
CER/WER (case-insensitive, :mod:`ocrstream.ocr.evaluation`) against the record's ``text``. The text
is the recogniser's raw reading (no post-processor): ``--postprocess`` adds a row with the
store stage's post-processing (:class:`ocrstream.ocr.postprocess.processor.PostProcessor`, default rules).
Detection recall/precision: the regions' boxes (axis-aligned, original page px) matched
one-to-one (greedy by IoU) to the ground-truth ``lines[].box`` at IoU >= 0.5.
CPU time is ``time.process_time`` (all threads of the process), per pipeline step
(:attr:`OCRPipeline.cpu_s`: decode, regions = clean-up + detection + crops, recognize, build).

    python bench/bench_pages.py [--data DIR] [--limit N] [--max-side PX] [--glyph-px PX] [--threads T]
                                [--unclip-ratio R] [--min-confidence C] [--show N]
                                [--cleanup STEPS] [--ablation] [--postprocess]

``--cleanup`` cleans each page before detection (:mod:`ocrstream.ocr.cleanup`, a comma
list; default: ``cleanup.DEFAULT_STEPS``; ``""`` = none). ``--ablation`` prints one row per
configuration: no clean-up, each step alone, the default combination (CER/WER ci, detection,
CPU-ms per page of decode, clean-up+detection+crops and their sum).
(Earlier one-off ablations, now fixed in the pipeline: crops cut from the cleaned page read as
well as from the original, :func:`ocrstream.ocr.regions.detected_regions`; isolated colons
attached to lines, :func:`ocrstream.ocr.detection.attach_colons`.)

``--stream`` reads the seeded dev stream of :mod:`bench.dev_stream` instead (every page upright,
a quarter turned 90/180/270, a quarter skewed 4-15 degrees, a few in perspective) and prints
CER ci per kind of page next to the CER ci of the SAME receipts upright, CPU-ms per page by kind
and the CPU of the orientation decision alone (:func:`ocrstream.ocr.cleanup.page_orientation`
on the decoded page); with ``--ablation``, one such row per clean-up configuration.

``--min-confidence`` drops regions below that confidence before joining (RapidOCR
drops < 0.5: rapidocr ``config.yaml`` ``Global.text_score``); default 0 keeps all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from dev_stream import KINDS, StreamPage, make_stream  # noqa: E402

from ocrstream.ocr import cleanup  # noqa: E402
from ocrstream.ocr.decode import decode_pages  # noqa: E402
from ocrstream.ocr.detection import DB_UNCLIP_RATIO, DEFAULT_GLYPH_PX, DEFAULT_MAX_SIDE, LineDetector  # noqa: E402
from ocrstream.ocr.document import Document  # noqa: E402
from ocrstream.ocr.evaluation import cer, wer  # noqa: E402
from ocrstream.ocr.postprocess.processor import PostProcessor  # noqa: E402
from ocrstream.ocr.predictor import STEPS, OCRPipeline  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402
from ocrstream.ocr.runtime import heap  # noqa: E402

#: ``<repo>/../shared`` (a worktree one level deeper: ``<repo>/../../shared``).
DATA = next((d / "shared" / "data" / "sroie-dev" for d in (REPO.parent, REPO.parent.parent)
             if (d / "shared" / "data" / "sroie-dev").is_dir()), REPO.parent / "shared" / "data" / "sroie-dev")
IOU_MATCH = 0.5


@dataclass
class Totals:
    """Accumulated per-step CPU seconds, texts and detection matches."""

    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    hyps: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    matched: int = 0
    n_det: int = 0
    n_gt: int = 0


def dev_pages(data_dir: Path) -> list[dict] | None:
    """The records of ``data_dir/pages.jsonl`` (``id``, ``image``, ``text``, ``boxes``), or None
    (printed: skipped) when it is absent."""
    manifest = data_dir / "pages.jsonl"
    if not manifest.is_file():
        print(f"skipped: {manifest} absent")
        return None
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of axis-aligned boxes ``[x0, y0, x1, y1]``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def count_matches(iou: np.ndarray, threshold: float = IOU_MATCH) -> int:
    """One-to-one matches with IoU >= threshold, greedy by decreasing IoU."""
    pairs = np.argwhere(iou >= threshold)
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]]) if len(pairs) else []
    used_a, used_b = set(), set()
    for k in order:
        i, j = pairs[k]
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a)


def page_text(document: Document, min_confidence: float = 0.0) -> str:
    """The document's text (:meth:`Document.render_text`'s joining), regions below
    ``min_confidence`` dropped."""
    if min_confidence <= 0:
        return document.render_text()
    rows = (" ".join(r.text for r in line.regions if r.text and r.confidence >= min_confidence)
            for page in document.pages for line in page.lines)
    return "\n".join(r for r in rows if r)


def run_page(record: dict, data_dir: Path, pipeline: OCRPipeline, totals: Totals, min_confidence: float) -> None:
    """One receipt through the pipeline; its text, reference and detection matches into ``totals``."""
    document = pipeline((data_dir / record["image"]).read_bytes(), document_id=record["id"])
    totals.hyps.append(page_text(document, min_confidence))
    totals.refs.append(record["text"])
    det_boxes = np.array([r.box for line in document.pages[0].lines for r in line.regions]).reshape(-1, 4)
    gt_boxes = np.array([line["box"] for line in record["lines"]], dtype=np.float64).reshape(-1, 4)
    totals.matched += count_matches(box_iou(det_boxes, gt_boxes))
    totals.n_det += len(det_boxes)
    totals.n_gt += len(gt_boxes)


def run(records: list[dict], pipeline: OCRPipeline, args: argparse.Namespace) -> Totals:
    """Every page through ``pipeline``; CPU seconds per step of this run."""
    totals = Totals()
    before = dict(pipeline.cpu_s)
    for record in records:
        run_page(record, args.data, pipeline, totals, args.min_confidence)
    totals.cpu = {k: pipeline.cpu_s[k] - before[k] for k in STEPS}
    return totals


def scores(totals: Totals) -> tuple[str, str, str, str]:
    """(CER ci, WER ci, det recall, det precision) formatted for a table row."""
    return (f"{100 * cer(totals.hyps, totals.refs):.2f} %", f"{100 * wer(totals.hyps, totals.refs):.2f} %",
            f"{100 * totals.matched / max(totals.n_gt, 1):.1f} %",
            f"{100 * totals.matched / max(totals.n_det, 1):.1f} %")


def ablation(records: list[dict], pipeline: OCRPipeline, args: argparse.Namespace) -> None:
    """One row per configuration: none, each clean-up step alone, the default combination."""
    configs = list(dict.fromkeys([(), *((name,) for name in cleanup.STEPS), cleanup.DEFAULT_STEPS]))
    print(f"pages: {len(records)}  max_side={args.max_side}  threads={args.threads}")
    print("| clean-up | page CER ci | page WER ci | det recall | det precision "
          "| CPU-ms decode | clean-up+detect+crop | decode+clean-up+detect+crop |")
    print("|---|---|---|---|---|---|---|---|")
    for steps in configs:
        pipeline.cleanup_steps = steps
        totals = run(records, pipeline, args)
        ms = {k: 1000 * v / len(records) for k, v in totals.cpu.items()}
        label = ",".join(steps) or "none"
        label += " (default)" if steps == cleanup.DEFAULT_STEPS else ""
        print(f"| {label} | " + " | ".join(scores(totals))
              + f" | {ms['decode']:.0f} | {ms['regions']:.0f} | {ms['decode'] + ms['regions']:.0f} |", flush=True)


def run_stream(stream: list[StreamPage], pipeline: OCRPipeline) -> dict[str, dict]:
    """Every stream page through ``pipeline`` -> {page id: {kind, base, hyp, ref, cpu_s}}."""
    out = {}
    for item in stream:
        before = sum(pipeline.cpu_s.values())
        document = pipeline(item.data, document_id=item.id)
        out[item.id] = {"kind": item.kind, "base": item.record["id"], "hyp": document.render_text(),
                        "ref": item.record["text"], "cpu_s": sum(pipeline.cpu_s.values()) - before}
    return out


def stream_row(result: dict[str, dict]) -> dict[str, str]:
    """Per kind: CER ci of its pages, CER ci of the same receipts upright, CPU-ms per page."""
    upright = {r["base"]: r for r in result.values() if r["kind"] == "upright"}
    row = {}
    for kind in KINDS:
        pages = [r for r in result.values() if r["kind"] == kind]
        if not pages:
            continue
        same = [upright[r["base"]] for r in pages if r["base"] in upright]
        c = 100 * cer([r["hyp"] for r in pages], [r["ref"] for r in pages])
        c0 = 100 * cer([r["hyp"] for r in same], [r["ref"] for r in same])
        ms = 1000 * sum(r["cpu_s"] for r in pages) / len(pages)
        if kind == "upright":
            row[kind] = f"{c:.2f} % / WER {100 * wer([r['hyp'] for r in pages], [r['ref'] for r in pages]):.2f} %"
        else:
            row[kind] = f"{c:.2f} % ({c0:.2f} %)"
        row[kind + " ms"] = f"{ms:.0f}"
    return row


def orientation_cost(stream: list[StreamPage]) -> tuple[float, int]:
    """(CPU-ms per page of :func:`cleanup.page_orientation` on the bordered page, pages judged wrong)."""
    spent, wrong = 0.0, 0
    for item in stream:
        page = cleanup.remove_border(next(iter(decode_pages(item.data))))[0]
        start = time.process_time()
        quarters = cleanup.page_orientation(page)
        spent += time.process_time() - start
        expected = (4 - int(item.detail) // 90) % 4 if item.kind == "turned" else 0
        wrong += quarters != expected
    return 1000 * spent / len(stream), wrong


def stream_report(stream: list[StreamPage], pipeline: OCRPipeline, configs: list[tuple[str, ...]]) -> None:
    """One row per clean-up configuration: CER ci per kind (same receipts upright), CPU-ms per page per kind."""
    counts = {k: sum(p.kind == k for p in stream) for k in KINDS}
    print("stream: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    print("| clean-up | upright CER ci | turned CER ci (same upright) | skewed | perspective "
          "| CPU-ms upright | turned | skewed | perspective |")
    print("|---|---|---|---|---|---|---|---|---|")
    for steps in configs:
        pipeline.cleanup_steps = steps
        row = stream_row(run_stream(stream, pipeline))
        label = ",".join(steps) or "none"
        label += " (default)" if steps == cleanup.DEFAULT_STEPS else ""
        print(f"| {label} | " + " | ".join(row.get(k, "") for k in KINDS) + " | "
              + " | ".join(row.get(k + " ms", "") for k in KINDS) + " |", flush=True)
    ms, wrong = orientation_cost(stream)
    print(f"orientation decision alone: {ms:.0f} CPU-ms per page; pages judged wrong: {wrong}/{len(stream)}")


def report(totals: Totals, n_pages: int, args: argparse.Namespace) -> None:
    print(f"pages: {n_pages}  max_side={args.max_side}  unclip_ratio={args.unclip_ratio}  "
          f"threads={args.threads}  batch={args.batch}  min_confidence={args.min_confidence}  "
          f"cleanup={args.cleanup!r}  postprocess={args.postprocess}")
    print("| page CER ci | page WER ci | det recall@0.5 | det precision@0.5 |")
    print("|---|---|---|---|")
    print(f"| {100 * cer(totals.hyps, totals.refs):.2f} % | {100 * wer(totals.hyps, totals.refs):.2f} % "
          f"| {100 * totals.matched / max(totals.n_gt, 1):.1f} % ({totals.matched}/{totals.n_gt}) "
          f"| {100 * totals.matched / max(totals.n_det, 1):.1f} % ({totals.matched}/{totals.n_det}) |")
    print("\nCPU-ms per page: | " + " | ".join(STEPS) + " | total |")
    print("|" + "---|" * (len(STEPS) + 1))
    per_page = [1000 * totals.cpu[s] / n_pages for s in STEPS]
    print("| " + " | ".join(f"{v:.0f}" for v in per_page) + f" | {sum(per_page):.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("OCRSTREAM_SROIE_DEV", DATA)),
                        help="the sroie-dev folder (default: $OCRSTREAM_SROIE_DEV, else ../shared/data/sroie-dev)")
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="detector long-side limit (px)")
    parser.add_argument("--glyph-px", type=float, default=DEFAULT_GLYPH_PX,
                        help="detector input sized so the median glyph is this tall, px (0: always --max-side)")
    parser.add_argument("--unclip-ratio", type=float, default=DB_UNCLIP_RATIO)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--batch", type=int, default=32, help="recogniser max_batch_size")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="drop regions below this")
    parser.add_argument("--show", type=int, default=0, help="print the N worst pages' texts")
    parser.add_argument("--cleanup", default=",".join(cleanup.DEFAULT_STEPS),
                        help=f"comma list of clean-up steps ({', '.join(cleanup.STEPS)}); '' = none")
    parser.add_argument("--ablation", action="store_true", help="one row per clean-up configuration")
    parser.add_argument("--postprocess", action="store_true",
                        help="score the store stage's post-processed text instead of the raw readings")
    parser.add_argument("--stream", action="store_true",
                        help="the seeded dev stream (bench/dev_stream.py): CER and CPU per kind of page")
    parser.add_argument("--configs", default=None,
                        help="with --stream --ablation: ';'-separated clean-up configurations to compare")
    parser.add_argument("--seed", type=int, default=20, help="dev stream seed")
    parser.add_argument("--save-texts", type=Path, default=None, help="write {page id: text} as JSON here")
    parser.add_argument("--mmap-threshold", type=int, default=0,
                        help="fix glibc's mmap threshold at this many bytes first, as the stage processes do "
                             "(OCRSTREAM_HEAP_MMAP_THRESHOLD_BYTES); 0 = glibc's dynamic default")
    parser.add_argument("--width-scale", type=float, default=None,
                        help="the recogniser's width_scale (crops read this much narrower; default: its own)")
    args = parser.parse_args(argv)
    if args.mmap_threshold:
        heap.fix_mmap_threshold(args.mmap_threshold)
    steps = cleanup.parse_steps(args.cleanup)
    records = dev_pages(args.data)
    if records is None:
        return 0
    logging.basicConfig(level=logging.WARNING)
    records = records[: args.limit] if args.limit else records
    detector = LineDetector(max_side=args.max_side, glyph_px=args.glyph_px, unclip_ratio=args.unclip_ratio,
                            device="cpu", threads=args.threads)
    scale = {} if args.width_scale is None else {"width_scale": args.width_scale}
    recognizer = load_recognizer("ppocr", device="cpu", threads=args.threads, max_batch_size=args.batch, **scale)
    postprocessor = PostProcessor() if args.postprocess else None
    pipeline = OCRPipeline(recognizer, detector, postprocessor, cleanup_steps=steps)
    if args.stream:
        stream = make_stream(records, args.data, seed=args.seed)
        if args.ablation:
            configs = ([cleanup.parse_steps(c) for c in args.configs.split(";")] if args.configs else
                       list(dict.fromkeys([("border",), ("border", "orientation"), ("border", "deskew"),
                                           ("border", "deskew", "orientation"), cleanup.DEFAULT_STEPS])))
        else:
            configs = [steps]
        print(f"max_side={args.max_side}  threads={args.threads}  seed={args.seed}")
        stream_report(stream, pipeline, configs)
        return 0
    if args.ablation:
        ablation(records, pipeline, args)
        return 0
    totals = run(records, pipeline, args)
    report(totals, len(records), args)
    if args.save_texts:
        args.save_texts.write_text(json.dumps({r["id"]: h for r, h in zip(records, totals.hyps)}, indent=1))
    worst = sorted(range(len(records)), key=lambda i: -cer([totals.hyps[i]], [totals.refs[i]]))
    for i in worst[: args.show]:
        print(f"\n=== {records[i]['id']} CER {100 * cer([totals.hyps[i]], [totals.refs[i]]):.1f} %\n"
              f"--- hyp\n{totals.hyps[i]}\n--- ref\n{totals.refs[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end page benchmark on the SROIE dev receipts: detect -> crop -> recognise.

Data: ``<repo>/../shared/data/sroie-dev/pages.jsonl`` (60 receipts, JPEG; see its README).
Per page: decode the JPEG, detect lines (:class:`services.preprocess.detect.LineDetector`),
crop them, recognise (``load_recognizer("ppocr")``), join the readings in reading order
(a visual line's boxes joined by " ", visual lines by "\\n") and score page CER/WER
(case-insensitive, :mod:`services.evaluation`) against the record's ``text``.
Detection recall/precision: detected quads' axis-aligned boxes matched one-to-one
(greedy by IoU) to the ground-truth ``lines[].box`` at IoU >= 0.5.
CPU time is ``time.process_time`` (all threads of the process), per stage.

    python bench/bench_pages.py [--limit N] [--max-side PX] [--threads T] [--unclip-ratio R]
                                [--min-confidence C] [--show N]
                                [--cleanup STEPS] [--crop-from cleaned|original] [--no-colons]
                                [--ablation]

``--cleanup`` cleans each page before detection (:mod:`services.preprocess.cleanup`, a comma
list; default: ``cleanup.DEFAULT_STEPS``; ``""`` = none): quads are mapped back to original
page pixels for the detection match, visual lines are grouped on the cleaned page, crops are
cut from the cleaned page or (``--crop-from original``) from the original through the mapped
quads. Detected quads are extended over isolated colons (:func:`attach_colons`, timed with
detection) unless ``--no-colons``. ``--ablation`` prints one row per configuration: no
clean-up, each step alone, the default combination (CER/WER ci, detection, CPU-ms per page
of decode, clean-up, detection, cropping and decode+clean-up+detection).

``--min-confidence`` drops readings below that confidence before joining (RapidOCR
drops < 0.5: rapidocr ``config.yaml`` ``Global.text_score``); default 0 keeps all.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.evaluation import cer, wer  # noqa: E402
from services.preprocess import cleanup  # noqa: E402
from services.preprocess.detect import (  # noqa: E402
    DB_UNCLIP_RATIO,
    DEFAULT_MAX_SIDE,
    LineDetector,
    attach_colons,
    crop_line,
    visual_lines,
)
from services.recognize.registry import load_recognizer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "sroie-dev"
IOU_MATCH = 0.5


@dataclass
class Totals:
    """Accumulated per-stage CPU seconds, texts and detection matches."""

    cpu: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("decode", "cleanup", "detect", "crop", "recognize"), 0.0))
    hyps: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    matched: int = 0
    n_det: int = 0
    n_gt: int = 0


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


def page_text(quads: list[np.ndarray], texts: list[str]) -> str:
    """Readings joined: boxes of a visual line by " ", visual lines by newline; empties dropped."""
    rows = (" ".join(texts[i] for i in line if texts[i].strip()) for line in visual_lines(quads))
    return "\n".join(r for r in rows if r)


def timed(totals: Totals, stage: str, fn, *args):
    t0 = time.process_time()
    result = fn(*args)
    totals.cpu[stage] += time.process_time() - t0
    return result


def run_page(record: dict, detector: LineDetector, recognizer, totals: Totals, min_confidence: float,
             steps: tuple[str, ...] = (), crop_from: str = "cleaned", colons: bool = True) -> None:
    data = (DATA / record["image"]).read_bytes()
    image = timed(totals, "decode", lambda: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    page, transform = timed(totals, "cleanup", cleanup.apply, image, steps)
    lines = timed(totals, "detect", detector.detect, page)
    quads = [line.quad for line in lines]  # cleaned page px: grouping into visual lines
    if colons:
        quads = timed(totals, "detect", attach_colons, page, quads)
    originals = [transform.to_original(q) for q in quads]  # original page px: matching
    source, crop_quads = (image, originals) if crop_from == "original" else (page, quads)
    crops = timed(totals, "crop", lambda: [crop_line(source, q) for q in crop_quads])
    readings = timed(totals, "recognize", recognizer.recognize, crops)
    totals.hyps.append(page_text(quads, [r.text if r.confidence >= min_confidence else "" for r in readings]))
    totals.refs.append(record["text"])
    det_boxes = np.array([[*q.min(axis=0), *q.max(axis=0)] for q in originals]).reshape(-1, 4)
    gt_boxes = np.array([line["box"] for line in record["lines"]], dtype=np.float64).reshape(-1, 4)
    totals.matched += count_matches(box_iou(det_boxes, gt_boxes))
    totals.n_det += len(det_boxes)
    totals.n_gt += len(gt_boxes)


def run(records: list[dict], detector: LineDetector, recognizer, args: argparse.Namespace,
        steps: tuple[str, ...]) -> Totals:
    """Every page through clean-up (``steps``), detection, cropping and recognition."""
    totals = Totals()
    for record in records:
        run_page(record, detector, recognizer, totals, args.min_confidence, steps, args.crop_from,
                 args.colons)
    return totals


def scores(totals: Totals) -> tuple[str, str, str, str]:
    """(CER ci, WER ci, det recall, det precision) formatted for a table row."""
    return (f"{100 * cer(totals.hyps, totals.refs):.2f} %", f"{100 * wer(totals.hyps, totals.refs):.2f} %",
            f"{100 * totals.matched / max(totals.n_gt, 1):.1f} %",
            f"{100 * totals.matched / max(totals.n_det, 1):.1f} %")


def ablation(records: list[dict], detector: LineDetector, recognizer, args: argparse.Namespace) -> None:
    """One row per configuration: none, each clean-up step alone, the default combination."""
    configs = list(dict.fromkeys([(), *((name,) for name in cleanup.STEPS), cleanup.DEFAULT_STEPS]))
    print(f"pages: {len(records)}  max_side={args.max_side}  crop_from={args.crop_from}  "
          f"colons={args.colons}  threads={args.threads}")
    print("| clean-up | page CER ci | page WER ci | det recall | det precision "
          "| CPU-ms decode | clean-up | detect | crop | decode+clean-up+detect |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for steps in configs:
        totals = run(records, detector, recognizer, args, steps)
        ms = {k: 1000 * v / len(records) for k, v in totals.cpu.items()}
        label = ",".join(steps) or "none"
        label += " (default)" if steps == cleanup.DEFAULT_STEPS else ""
        print(f"| {label} | " + " | ".join(scores(totals))
              + "".join(f" | {ms[k]:.0f}" for k in ("decode", "cleanup", "detect", "crop"))
              + f" | {ms['decode'] + ms['cleanup'] + ms['detect']:.0f} |", flush=True)


def report(totals: Totals, n_pages: int, args: argparse.Namespace) -> None:
    print(f"pages: {n_pages}  max_side={args.max_side}  unclip_ratio={args.unclip_ratio}  "
          f"threads={args.threads}  batch={args.batch}  min_confidence={args.min_confidence}  "
          f"cleanup={args.cleanup!r}  crop_from={args.crop_from}  colons={args.colons}")
    print("| page CER ci | page WER ci | det recall@0.5 | det precision@0.5 |")
    print("|---|---|---|---|")
    print(f"| {100 * cer(totals.hyps, totals.refs):.2f} % | {100 * wer(totals.hyps, totals.refs):.2f} % "
          f"| {100 * totals.matched / max(totals.n_gt, 1):.1f} % ({totals.matched}/{totals.n_gt}) "
          f"| {100 * totals.matched / max(totals.n_det, 1):.1f} % ({totals.matched}/{totals.n_det}) |")
    stages = list(totals.cpu)
    print("\nCPU-ms per page: | " + " | ".join(stages) + " | total |")
    print("|" + "---|" * (len(stages) + 1))
    per_page = [1000 * totals.cpu[s] / n_pages for s in stages]
    print("| " + " | ".join(f"{v:.0f}" for v in per_page) + f" | {sum(per_page):.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="detector long-side limit (px)")
    parser.add_argument("--unclip-ratio", type=float, default=DB_UNCLIP_RATIO)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--batch", type=int, default=32, help="recogniser max_batch_size")
    parser.add_argument("--min-confidence", type=float, default=0.0, help="drop readings below this")
    parser.add_argument("--show", type=int, default=0, help="print the N worst pages' texts")
    parser.add_argument("--cleanup", default=",".join(cleanup.DEFAULT_STEPS),
                        help=f"comma list of clean-up steps ({', '.join(cleanup.STEPS)}); '' = none")
    parser.add_argument("--crop-from", choices=("cleaned", "original"), default="cleaned",
                        help="cut line crops from the cleaned page or the original one")
    parser.add_argument("--ablation", action="store_true", help="one row per clean-up configuration")
    parser.add_argument("--no-colons", dest="colons", action="store_false",
                        help="do not extend detected lines over isolated colons (detect.attach_colons)")
    args = parser.parse_args(argv)
    steps = cleanup.parse_steps(args.cleanup)
    manifest = DATA / "pages.jsonl"
    if not manifest.is_file():
        print(f"skipped: {manifest} absent")
        return 0
    logging.basicConfig(level=logging.WARNING)
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    records = records[: args.limit] if args.limit else records
    detector = LineDetector(max_side=args.max_side, unclip_ratio=args.unclip_ratio, device="cpu", threads=args.threads)
    recognizer = load_recognizer("ppocr", device="cpu", threads=args.threads, max_batch_size=args.batch)
    if args.ablation:
        ablation(records, detector, recognizer, args)
        return 0
    totals = run(records, detector, recognizer, args, steps)
    report(totals, len(records), args)
    worst = sorted(range(len(records)), key=lambda i: -cer([totals.hyps[i]], [totals.refs[i]]))
    for i in worst[: args.show]:
        print(f"\n=== {records[i]['id']} CER {100 * cer([totals.hyps[i]], [totals.refs[i]]):.1f} %\n"
              f"--- hyp\n{totals.hyps[i]}\n--- ref\n{totals.refs[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

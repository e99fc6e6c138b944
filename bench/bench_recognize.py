"""Line-recognition benchmark on the SROIE dev line crops (PP-OCRv6 rec on ONNX Runtime).

Data: ``<repo>/../shared/data/sroie-dev/lines.jsonl`` (1500 crops; see its README). The
ground truth is upper case, so every score is case-insensitive (:mod:`ocrstream.ocr.evaluation`).

Prints: CER ci, CER ci without spaces and WER ci with and without space restoration
(plus the other decoding options switched off one at a time with ``--ablation``), then
lines/s (wall) and CPU-ms per line (``time.process_time``, all threads) for
max_batch_size 1, 8, 32 with 1 and 2 onnxruntime threads. Images are decoded before
timing; each timed run is preceded by a short warm-up.

    python bench/bench_recognize.py [--limit N] [--ablation]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.ocr.evaluation import cer, wer  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "sroie-dev"
ACCURACY_CONFIGS = {
    "default (space restoration on)": {},
    "space restoration off": {"space_restoration": False},
}
ABLATIONS = {
    "look-alike repair off": {"lookalikes": False},
    "charset all (no Latin restriction)": {"charset": "all"},
    "batching pad (PaddleOCR: pad to widest)": {"batching": "pad"},
    "all four off (PaddleOCR-style decoding)": {
        "space_restoration": False, "lookalikes": False, "charset": "all", "batching": "pad"},
}


def load_lines(limit: int | None) -> tuple[list, list[str]]:
    records = [json.loads(line) for line in (DATA / "lines.jsonl").read_text().splitlines() if line.strip()]
    records = records[:limit] if limit else records
    images = [cv2.imread(str(DATA / r["image"]), cv2.IMREAD_COLOR) for r in records]
    return images, [r["text"] for r in records]


def accuracy_row(name: str, images: list, refs: list[str], **options) -> str:
    recognizer = load_recognizer("ppocr", device="cpu", threads=2, **options)
    hyps = [r.text for r in recognizer.recognize(images)]
    return (f"| {name} | {100 * cer(hyps, refs):.2f} % | {100 * cer(hyps, refs, ignore_spaces=True):.2f} % "
            f"| {100 * wer(hyps, refs):.2f} % |")


def speed_row(images: list, batch: int, threads: int) -> str:
    recognizer = load_recognizer("ppocr", device="cpu", threads=threads, max_batch_size=batch)
    recognizer.recognize(images[:8])  # warm-up: allocations, first-run kernels
    wall, cpu = time.perf_counter(), time.process_time()
    recognizer.recognize(images)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return f"| {batch} | {threads} | {len(images) / wall:.1f} | {1000 * cpu / len(images):.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="first N lines only")
    parser.add_argument("--ablation", action="store_true", help="also score each decoding option switched off")
    args = parser.parse_args(argv)
    manifest = DATA / "lines.jsonl"
    if not manifest.is_file():
        print(f"skipped: {manifest} absent")
        return 0
    logging.basicConfig(level=logging.WARNING)
    images, refs = load_lines(args.limit)
    print(f"lines: {len(images)} (SROIE dev); scores case-insensitive; accuracy at batch 32, 2 threads")
    print("| decoding | CER ci | CER ci no spaces | WER ci |\n|---|---|---|---|")
    configs = {**ACCURACY_CONFIGS, **(ABLATIONS if args.ablation else {})}
    for name, options in configs.items():
        print(accuracy_row(name, images, refs, **options), flush=True)
    print("\n| max_batch_size | threads | lines/s (wall) | CPU-ms/line |\n|---|---|---|---|")
    for threads in (1, 2):
        for batch in (1, 8, 32):
            print(speed_row(images, batch, threads), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Micro-batching across documents in the recognize stage: CPU per line and lines/s by load.

    .venv/bin/python bench/bench_microbatch.py [--docs-per-poll 1 4 16] [--lines-per-doc 24]

The recognize stage hands every record of one poll to a single recogniser call
(``RecognizeStage.handle_batch``). This replays that on real receipt crops
(``../shared/data/sroie-dev/lines.jsonl``): documents of ``--lines-per-doc`` crops arrive
``k`` per poll, and the crops of a poll are read in one call (max batch 32, 1 thread). k = 1 is
a lone document (lowest latency); larger k is a loaded stage. Prints CPU-ms per line (process
CPU time) and lines per CPU-second. Exits 0 with a message when ../shared is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_recognize import DATA, load_lines  # noqa: E402

from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402


def cpu_ms_per_line(recognizer, docs: list[list], per_poll: int) -> float:
    """Process-CPU milliseconds per line when ``per_poll`` documents share each recogniser call."""
    started = time.process_time()
    for i in range(0, len(docs), per_poll):
        recognizer.recognize([crop for doc in docs[i:i + per_poll] for crop in doc])
    lines = sum(len(d) for d in docs)
    return 1000 * (time.process_time() - started) / lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs-per-poll", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--lines-per-doc", type=int, default=24)
    parser.add_argument("--limit", type=int, default=768, help="lines used (a multiple of lines-per-doc)")
    parser.add_argument("--recognizer", default="ppocr")
    args = parser.parse_args(argv)
    if not (DATA / "lines.jsonl").is_file():
        print(f"skipped: {DATA / 'lines.jsonl'} absent")
        return 0
    images, _ = load_lines(args.limit)
    docs = [images[i:i + args.lines_per_doc] for i in range(0, len(images), args.lines_per_doc)]
    recognizer = load_recognizer(args.recognizer, device="cpu", threads=1, max_batch_size=32)
    recognizer.recognize(docs[0])  # warm-up
    print(f"{len(docs)} documents x {args.lines_per_doc} real receipt lines, {args.recognizer}, 1 thread")
    print("| documents per poll | CPU-ms per line | lines per CPU-s |")
    print("|---|---|---|")
    for k in args.docs_per_poll:
        ms = cpu_ms_per_line(recognizer, docs, k)
        print(f"| {k} | {ms:.1f} | {1000 / ms:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

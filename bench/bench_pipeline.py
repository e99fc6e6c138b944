"""Score a demo run over the SROIE dev pages: accuracy and time through the whole pipeline.

    ./demo.sh --input ../shared/data/sroie-dev/pages/img
    .venv/bin/python bench/bench_pipeline.py                # reads .ocrstream/demo/results.jsonl

Prints case-insensitive CER/WER (micro-averaged, whitespace runs collapsed, see
../shared/data/sroie-dev/README.md), CER without spaces, the share of documents done, and time:
end-to-end wall seconds per page (first submission to last stored result / pages) and the
median seconds each stage held a document (from the events' per-stage timestamps).
Exits 0 with a message when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.ocr.evaluation import cer, wer  # noqa: E402

PAGES = REPO.parent / "shared" / "data" / "sroie-dev" / "pages.jsonl"
STEPS = [("ingest", "submitted", "ingested"), ("preprocess", "ingested", "preprocessed"),
         ("recognize", "preprocessed", "recognized"), ("store", "recognized", "stored")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / ".ocrstream/demo/results.jsonl")
    parser.add_argument("--pages", type=Path, default=PAGES)
    args = parser.parse_args()
    if not args.pages.exists():
        print(f"skipped: {args.pages} absent")
        return 0
    truth = {Path(r["image"]).name: r["text"] for r in map(json.loads, args.pages.open())}
    results = [r for r in map(json.loads, args.results.open()) if r["filename"] in truth]
    if not results:
        print(f"no results for SROIE pages in {args.results}: run the demo with --input first")
        return 1
    hyps = [r["text"].replace("\f", "\n") for r in results]
    refs = [truth[r["filename"]] for r in results]
    done = sum(r["status"] == "done" for r in results)
    t = lambda r, k: datetime.fromisoformat(r["timestamps"][k])  # noqa: E731
    span = (max(t(r, "stored") for r in results) - min(t(r, "submitted") for r in results)).total_seconds()
    print(f"pages: {len(results)} ({done} done, {len(results) - done} failed)")
    print(f"CER ci {cer(hyps, refs, ci=True):.2%}   CER ci no spaces "
          f"{cer(hyps, refs, ci=True, ignore_spaces=True):.2%}   WER ci {wer(hyps, refs, ci=True):.2%}")
    print(f"wall per page (end to end, first submit to last stored / pages): {span / len(results):.2f} s")
    for stage, a, b in STEPS:
        held = [(t(r, b) - t(r, a)).total_seconds() for r in results if a in r["timestamps"] and b in r["timestamps"]]
        if held:
            print(f"  {stage:<10} median {statistics.median(held):.2f} s per document (incl. queueing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The review loop measured (issue 21): a simulated reviewer corrects what the review page would
show on the even-numbered SROIE dev receipts, the corrections fine-tune the recogniser, and the
odd-numbered receipts tell whether it helped.

    .venv/bin/python bench/bench_review_loop.py DIR [--threshold 0.98] [--budget-min 8]

1. Every line of the even receipts (``../shared/data/sroie-dev/lines.jsonl``) is read by the
   shipped PP-OCRv6 recogniser; the review page shows a line when its confidence is under
   ``--threshold`` (the store's ``OCRSTREAM_REVIEW_THRESHOLD``: ``needs_review``). The simulated
   reviewer types the ground truth for exactly those lines (``DIR/reviewed.jsonl``, SROIE's
   capitals: ``"case": "upper"``), as ``label-export --from-store`` would export them.
2. ``ocrstream model finetune`` on those lines only (``--train-caseless``), validated and gated on
   the odd receipts' lines; base and tuned CER ci come from its manifest (the whole odd set read
   as the recognize stage serves it). ``--force`` writes the model even when the gate refuses it,
   so the numbers are always printed; the gate's verdict is printed too.
3. Regions a reviewer sees per receipt (shown / receipts) against the CER gain, and the CPU cost
   per line of reading with the model (process CPU seconds of the recogniser over the odd lines /
   lines, one thread): what a shadow group (``ocrstream run recognize --shadow``) spends per line.

Skipped cleanly when ``../shared`` is absent. Manifests point at ``../shared`` by absolute path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SROIE = next((d / "shared" / "data" / "sroie-dev" for d in (ROOT.parent, ROOT.parent.parent)
              if (d / "shared" / "data" / "sroie-dev").is_dir()), ROOT.parent / "shared" / "data" / "sroie-dev")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--threshold", type=float, default=0.98, help="review threshold (confidence under it: shown)")
    ap.add_argument("--budget-min", type=float, default=8.0, help="CPU minutes of training")
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args(argv)
    if not (SROIE / "lines.jsonl").is_file():
        print(f"skipped: {SROIE} not found")
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ocrstream.training.evaluate import load_for_eval
    from ocrstream.training.manifest import load_image, read_manifest

    args.dir.mkdir(parents=True, exist_ok=True)
    split: dict[str, list[dict]] = {"even": [], "odd": []}
    for line in (SROIE / "lines.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec["image"] = str((SROIE / rec["image"]).resolve())
        rec["case"] = "upper"
        split["even" if int(rec["id"].split("_")[1]) % 2 == 0 else "odd"].append(rec)
    for name, recs in split.items():
        (args.dir / f"sroie-{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    reader = load_for_eval("ppocr", threads=1)
    even = read_manifest(args.dir / "sroie-even.jsonl")
    shown, receipts = [], {r["id"].split("_")[1] for r in split["even"]}
    for start in range(0, len(even), 64):
        chunk = even[start:start + 64]
        readings = reader.recognize([load_image(s) for s in chunk])
        shown += [rec for rec, reading in zip(split["even"][start:start + 64], readings)
                  if reading.confidence < args.threshold]
    reviewed = args.dir / "reviewed.jsonl"
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in shown))

    odd = read_manifest(args.dir / "sroie-odd.jsonl")
    cpu0 = time.process_time()
    for start in range(0, len(odd), 64):
        reader.recognize([load_image(s) for s in odd[start:start + 64]])
    cpu_per_line = (time.process_time() - cpu0) / len(odd)

    model = args.dir / "model"
    finetune = [sys.executable, "-m", "ocrstream.cli", "model", "finetune", str(model), "--base", "ppocr",
                "--train-caseless", str(reviewed), "--val", str(args.dir / "sroie-odd.jsonl"), "--threads", "1",
                "--budget-min", str(args.budget_min), "--lr", str(args.lr), "--force"]
    print("finetune:", " ".join(finetune), flush=True)
    subprocess.run(finetune, check=True, cwd=ROOT)
    manifest = json.loads((model / "manifest.json").read_text())
    base, tuned = manifest["metrics"]["val_base"], manifest["metrics"]["val_tuned"]
    result = {
        "threshold": args.threshold, "even_receipts": len(receipts), "even_lines": len(even),
        "shown_lines": len(shown), "shown_per_receipt": round(len(shown) / len(receipts), 2),
        "odd_lines": len(odd), "cer_ci_base": base["cer_ci"], "cer_ci_tuned": tuned["cer_ci"],
        "gain_points": round(100 * (base["cer_ci"] - tuned["cer_ci"]), 3),
        "gate_passed": not manifest["metrics"]["gate_forced"], "train_cpu_s": manifest["training"]["cpu_s"],
        "steps": manifest["training"]["steps"], "cpu_ms_per_line": round(1000 * cpu_per_line, 2),
    }
    print(json.dumps(result, indent=2))
    (args.dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fine-tuning benchmark: base vs fine-tuned PP-OCRv6 on held-out SROIE receipts and synthetic text.

    .venv/bin/python bench/bench_finetune.py prepare DIR        # data split + synthetic sets (prints the next commands)
    .venv/bin/python bench/bench_finetune.py run DIR [--budget-min 60] [--synth 3000]   # prepare + finetune + evaluate

Split (by receipt, so no receipt is in both): lines of even-numbered receipts of
``../shared/data/sroie-dev/lines.jsonl`` train, odd-numbered ones validate; SROIE labels are
upper case (``"case": "upper"``: case-folded loss, scored ``ci``). Synthetic sets
(``ocrstream model synth``): training = receipt generators + spans of the GPL-3 text (Debian
``/usr/share/common-licenses``), evaluation = mixed-case article text from other licence texts
(Apache-2.0, MPL-2.0), another seed: it shows whether anything else got worse. Manifests are
written to DIR and point at ``../shared`` by absolute path (nothing is copied into the repo).
Skipped cleanly when ``../shared`` is absent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ``<repo>/../shared`` (a worktree one level deeper: ``<repo>/../../shared``).
SROIE = next((d / "shared" / "data" / "sroie-dev" for d in (ROOT.parent, ROOT.parent.parent)
              if (d / "shared" / "data" / "sroie-dev").is_dir()), ROOT.parent / "shared" / "data" / "sroie-dev")
LICENSES = Path("/usr/share/common-licenses")


def prepare(out: Path, synth_train: int, synth_eval: int) -> dict[str, Path]:
    """Write the manifests; returns their paths by role."""
    from ocrstream.training.synth import synthesize

    out.mkdir(parents=True, exist_ok=True)
    split = {"even": [], "odd": []}
    for line in (SROIE / "lines.jsonl").read_text().splitlines():
        rec = json.loads(line)
        receipt = int(rec["id"].split("_")[1])
        rec["image"] = str((SROIE / rec["image"]).resolve())
        rec["case"] = "upper"
        split["even" if receipt % 2 == 0 else "odd"].append(rec)
    paths = {}
    for name, recs in split.items():
        paths[f"sroie_{name}"] = out / f"sroie-{name}.jsonl"
        paths[f"sroie_{name}"].write_text("".join(json.dumps(r) + "\n" for r in recs))
    article = out / "article.txt"
    article.write_text((LICENSES / "Apache-2.0").read_text() + (LICENSES / "MPL-2.0").read_text())
    if not (out / "synth-train" / "lines.jsonl").is_file():
        synthesize(out / "synth-train", synth_train, text_file=LICENSES / "GPL-3", seed=1, prefix="train")
    if not (out / "synth-article" / "lines.jsonl").is_file():
        synthesize(out / "synth-article", synth_eval, text_file=article, generators=(), seed=2, prefix="article")
    paths["synth_train"] = out / "synth-train" / "lines.jsonl"
    paths["synth_article"] = out / "synth-article" / "lines.jsonl"
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["prepare", "run"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--synth", type=int, default=3000, help="synthetic training lines")
    ap.add_argument("--synth-eval", type=int, default=300, help="synthetic mixed-case evaluation lines")
    ap.add_argument("--budget-min", type=float, default=60.0, help="CPU minutes of training")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args(argv)
    if not (SROIE / "lines.jsonl").is_file():
        print(f"skipped: {SROIE} not found")
        return 0
    p = prepare(args.dir, args.synth, args.synth_eval)
    model = args.dir / "model"
    finetune = [sys.executable, "-m", "ocrstream.cli", "model", "finetune", str(model), "--base", "ppocr",
                "--train", str(p["synth_train"]), "--train-caseless", str(p["sroie_even"]), "--val", str(p["sroie_odd"]),
                "--threads", str(args.threads), "--budget-min", str(args.budget_min), "--lr", str(args.lr), "--force"]
    evaluate = [sys.executable, "-m", "ocrstream.cli", "model", "evaluate", "ppocr", str(model),
                "--set", str(p["sroie_odd"]), "--set", str(p["synth_article"]), "--threads", str(args.threads)]
    print("manifests:", json.dumps({k: str(v) for k, v in p.items()}, indent=2))
    print("finetune:", " ".join(finetune))
    print("evaluate:", " ".join(evaluate))
    if args.action == "run":
        subprocess.run(finetune, check=True, cwd=ROOT)
        subprocess.run(evaluate, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())

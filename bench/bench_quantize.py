"""Issue 13: does int8 quantisation or a second ORT thread pay for the PP-OCRv6 recogniser?

    .venv/bin/python bench/bench_quantize.py [--limit 300] [--cache DIR]

Quantises the shipped recogniser with ``onnxruntime.quantization.quantize_dynamic`` (QUInt8
weights, per tensor) into ``--cache`` (default ``$TMPDIR/ocrstream-quant``; nothing is
downloaded), then reads the first ``--limit`` SROIE dev lines (``../shared/data/sroie-dev``,
skipped when absent) with fp32/1 thread, fp32/2 threads and int8/1 thread, alternating in two
rounds so every configuration sees the same machine load. Prints CPU-ms per line
(``resource.getrusage``, all threads) and CER/WER ci. Measured 2026-11-23 (300 lines, shared
2-core host): fp32 t1 42.1 ms 1.30 %/7.82 %; fp32 t2 47.8 ms, same text; int8 43.4 ms
5.84 %/26.53 %: neither kept (threads default 1, services/core/onnx_session.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from services.evaluation import cer, wer  # noqa: E402
from services.recognize import ppocr  # noqa: E402
from services.recognize.registry import load_recognizer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "sroie-dev"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ocrstream-quant")
    args = parser.parse_args()
    if not (DATA / "lines.jsonl").is_file():
        print(f"skipped: {DATA / 'lines.jsonl'} absent")
        return 0
    from onnxruntime.quantization import QuantType, quantize_dynamic

    records = [json.loads(line) for line in (DATA / "lines.jsonl").read_text().splitlines()[: args.limit]]
    images = [cv2.imread(str(DATA / r["image"])) for r in records]
    refs = [r["text"] for r in records]
    int8 = args.cache / "PP-OCRv6_rec_small.int8.onnx"
    if not int8.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(ppocr.model_path()), str(int8), weight_type=QuantType.QUInt8, per_channel=False)
    configs = {"fp32, 1 thread": (None, 1), "fp32, 2 threads": (None, 2), "int8 dynamic, 1 thread": (int8, 1)}
    readers = {name: load_recognizer("ppocr", device="cpu", threads=t, max_batch_size=32,
                                     **({"model": str(m)} if m else {})) for name, (m, t) in configs.items()}
    spent, texts = dict.fromkeys(readers, 0.0), {}
    for _ in range(2):  # alternate: the same load for every configuration
        for name, reader in readers.items():
            reader.recognize(images[:8])
            start = cpu()
            texts[name] = [r.text for r in reader.recognize(images)]
            spent[name] += cpu() - start
    print(f"{len(images)} dev lines | CPU-ms per line | CER ci | WER ci")
    for name in readers:
        print(f"{name} | {1000 * spent[name] / 2 / len(images):.1f} | {100 * cer(texts[name], refs):.2f} % "
              f"| {100 * wer(texts[name], refs):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

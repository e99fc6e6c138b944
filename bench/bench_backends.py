"""Inference backends side by side (issue 22): readings and CPU of ONNX Runtime fp32 and OpenVINO
(bf16 where the CPU has it, fp32 for comparison) on the SROIE dev lines and pages, in one run.

Per backend (``OCRSTREAM_INFERENCE``, :func:`ocrstream.ocr.runtime.onnx_session.resolve_backend`):

* lines: the recogniser (``load_recognizer("ppocr")``, 1 thread, one line per call as the stages'
  smallest batch) on ``sroie-dev/lines.jsonl``: CER/WER ci (:mod:`ocrstream.ocr.evaluation`),
  CPU-ms per line (``time.process_time``, all threads);
* pages: :class:`ocrstream.ocr.OCRPipeline` (decode, clean-up, detection, recognition, build, no
  post-processing) on ``sroie-dev/pages.jsonl``: CER/WER ci, CPU-s per page.

Backends alternate page by page and line by line (interleaved), so a noisy neighbour on the
shared host weighs on every row alike; each backend is warmed up on the first item first.

    python bench/bench_backends.py [--data DIR] [--lines N] [--pages N]
        [--backends onnxruntime,openvino-bf16,openvino-fp32,onnxruntime/whole-head]

A backend may carry variants after slashes (:data:`VARIANTS`), for before rows in the same run:
``whole-head``, the recogniser computing every output column of the shipped model (no
:mod:`ocrstream.ocr.recognition.ctc_head` cut); ``fixed-det``, every page fed to the detector at
its ``max_side`` (no glyph-height sizing, :meth:`ocrstream.ocr.detection.LineDetector.input_side`).

Skipped cleanly (exit 0) when ``../shared`` is absent; backends this CPU cannot run are left out.
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

from bench.bench_pages import DATA, dev_pages  # noqa: E402
from ocrstream.ocr.evaluation import cer, wer  # noqa: E402
from ocrstream.ocr.predictor import OCRPipeline  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402
from ocrstream.ocr.runtime.openvino_session import cpu_has_bf16, openvino_available  # noqa: E402
from ocrstream.training.manifest import load_image, read_manifest  # noqa: E402

#: variant name -> (recogniser options, detector options) it sets.
VARIANTS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "whole-head": ({"cut_head": False}, {}),
    "fixed-det": ({}, {"glyph_px": 0}),
}


def split_spec(spec: str) -> tuple[str, dict[str, object], dict[str, object]]:
    """``"backend/variant/..."`` -> (backend, recogniser options, detector options of the variants).

    Raises:
        SystemExit: an unknown variant.
    """
    backend, *variants = spec.split("/")
    reader: dict[str, object] = {}
    detector: dict[str, object] = {}
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(VARIANTS)}")
        reader.update(VARIANTS[v][0])
        detector.update(VARIANTS[v][1])
    return backend, reader, detector


def reader_for(spec: str):
    """The recogniser of a backend spec (1 thread, CPU)."""
    backend, options, _ = split_spec(spec)
    return load_recognizer("ppocr", device="cpu", threads=1, backend=backend, **options)


def detector_for(spec: str):
    """The line detector of a backend spec (1 thread, CPU)."""
    from ocrstream.ocr.detection import LineDetector

    backend, _, options = split_spec(spec)
    return LineDetector(device="cpu", threads=1, backend=backend, **options)  # type: ignore[arg-type]


def runnable(backends: list[str]) -> list[str]:
    """The backends of ``backends`` this machine can run (printed: the ones left out)."""
    ok = []
    for spec in backends:
        b = split_spec(spec)[0]
        if b.startswith("openvino") and not openvino_available():
            print(f"left out {b}: openvino is not installed")
        elif b == "openvino-bf16" and not cpu_has_bf16():
            print(f"left out {b}: this CPU has no native bfloat16")
        else:
            ok.append(spec)
    return ok


def print_table(title: str, unit: str, hyps: dict[str, list[str]], refs: list[str], cost: dict[str, float]) -> None:
    """One Markdown table: per backend CER/WER ci against ``refs`` and ``cost`` (in ``unit``), with its
    ratio to the first backend's."""
    print(f"\n## {title}")
    print(f"| backend | CER ci | WER ci | {unit} | x {next(iter(cost))} |")
    print("|---|---|---|---|---|")
    base = next(iter(cost.values()))
    for b, c in cost.items():
        print(f"| {b} | {100 * cer(hyps[b], refs):.2f} % | {100 * wer(hyps[b], refs):.2f} % | {c:.3g} | {c / base:.2f} |")


def bench_lines(data: Path, backends: list[str], limit: int) -> None:
    samples = read_manifest(data / "lines.jsonl", limit=limit)
    images = [load_image(s) for s in samples]
    readers = {b: reader_for(b) for b in backends}
    hyps: dict[str, list[str]] = {b: [] for b in backends}
    cpu = dict.fromkeys(backends, 0.0)
    for reader in readers.values():
        reader.recognize(images[:1])  # warm-up (compilation, arena)
    for image in images:
        for b, reader in readers.items():
            t0 = time.process_time()
            hyps[b].append(reader.recognize([image])[0].text)
            cpu[b] += time.process_time() - t0
    print_table(f"{len(samples)} dev lines, recogniser only, 1 thread, one line per call", "CPU-ms per line",
                hyps, [s.text for s in samples], {b: 1000 * c / len(samples) for b, c in cpu.items()})


def bench_pages(data: Path, backends: list[str], limit: int) -> None:
    records = (dev_pages(data) or [])[:limit]
    if not records:
        return
    pipelines = {b: OCRPipeline(reader_for(b), detector_for(b), None) for b in backends}
    for pipeline in pipelines.values():
        pipeline((data / records[0]["image"]).read_bytes())  # warm-up
    hyps: dict[str, list[str]] = {b: [] for b in backends}
    cpu = dict.fromkeys(backends, 0.0)
    for record in records:
        data_bytes = (data / record["image"]).read_bytes()
        for b, pipeline in pipelines.items():
            t0 = time.process_time()
            hyps[b].append(pipeline(data_bytes, document_id=record["id"]).render_text())
            cpu[b] += time.process_time() - t0
    print_table(f"{len(records)} dev pages, OCRPipeline (no post-processing), 1 thread", "CPU-s per page",
                hyps, [r["text"] for r in records], {b: c / len(records) for b, c in cpu.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--lines", type=int, default=1500, help="dev lines to read (0: none)")
    parser.add_argument("--pages", type=int, default=60, help="dev pages to read (0: none)")
    parser.add_argument("--backends", default="onnxruntime,openvino-bf16,openvino-fp32")
    args = parser.parse_args(argv)
    if not (args.data / "lines.jsonl").is_file():
        print(f"skipped: {args.data} absent")
        return 0
    backends = runnable([b.strip() for b in args.backends.split(",") if b.strip()])
    print(f"backends: {', '.join(backends)} (first = the baseline of the ratio column); "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.lines:
        bench_lines(args.data, backends, args.lines)
    if args.pages:
        bench_pages(args.data, backends, args.pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())

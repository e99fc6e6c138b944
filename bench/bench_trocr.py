"""TrOCR speed: ONNX Runtime (ocrstream/ocr/recognition/trocr/) vs PyTorch ``generate()``, per line.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_trocr.py            # tiny random model
    .venv/bin/python bench/bench_trocr.py --src CHECKPOINT_DIR --lines 16    # a real local checkpoint

For greedy and beam search (3 beams), batch sizes 1, 8 and 32 and 1 and 2 intra-op threads
(onnxruntime ``intra_op_num_threads``, ``torch.set_num_threads``), both runtimes read the same
rendered text lines with the same settings (``max_new_tokens``, ``early_stopping=False``,
KV cache on), pre-processing included. Reported: CPU-ms per line (``time.process_time`` of
the whole process, all threads; best of ``--repeats``), lines per CPU-second, the PyTorch /
ONNX CPU-time ratio and how many lines gave identical token ids in both. The default model
is ``make_tiny_trocr`` (random weights, ~70k parameters): its numbers measure per-call and
per-token overheads, not a real TrOCR's arithmetic. Exits 0 with a message when torch,
transformers or optimum-onnx are missing (``pip install -e '.[export]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _cpu(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, help="local TrOCR checkpoint folder (default: a tiny random one)")
    parser.add_argument("--lines", type=int, default=32, help="text lines read per measurement")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    try:
        import torch
        from PIL import Image
        from transformers import TrOCRProcessor, VisionEncoderDecoderModel

        from ocrstream.ocr.recognition.trocr import TrOCRRecognizer
        from ocrstream.training.trocr_export import CHECK_LINES, export_trocr, make_tiny_trocr, render_lines
    except ImportError as exc:
        print(f"skipped: {exc} (install the export extra: pip install -e '.[export]')")
        return 0

    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")  # torch tracer / transformers deprecation noise during the export
    with tempfile.TemporaryDirectory() as tmp:
        src = args.src or make_tiny_trocr(Path(tmp) / "src")
        onnx_dir = Path(tmp) / "onnx"
        export_trocr(src, onnx_dir, smoke_test=False)
        model = VisionEncoderDecoderModel.from_pretrained(src).eval()
        processor = TrOCRProcessor.from_pretrained(src)
        images = render_lines([CHECK_LINES[i % len(CHECK_LINES)] for i in range(args.lines)])
        pil = [Image.fromarray(i[:, :, ::-1].copy()) for i in images]
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {src if args.src else 'tiny random TrOCR'} ({n_params / 1e6:.2f} M parameters), "
              f"{args.lines} lines, max_new_tokens={args.max_new_tokens}, CPU time = time.process_time, "
              f"best of {args.repeats}")
        header = (f"{'decoding':<9}{'thr':>4}{'batch':>6} | {'ORT ms/line':>11}{'lines/CPU-s':>12} | "
                  f"{'torch ms/line':>13}{'lines/CPU-s':>12} | {'torch/ORT':>9}{'same ids':>9}")
        print(header)
        print("-" * len(header))
        for name, beams in (("greedy", 1), ("beam3", 3)):
            gen = dict(num_beams=beams, max_new_tokens=args.max_new_tokens)
            for threads in args.threads:
                torch.set_num_threads(threads)
                rec = TrOCRRecognizer(onnx_dir, device="cpu", threads=threads, split_long_lines=False)
                for batch in args.batches:
                    rec.max_batch_size = batch
                    ours = rec.generate(images, **gen)

                    def run_ort():
                        rec.generate(images, **gen)

                    def run_torch(keep=None):
                        with torch.no_grad():
                            for lo in range(0, len(pil), batch):
                                pv = processor(images=pil[lo : lo + batch], return_tensors="pt").pixel_values
                                out = model.generate(pv, early_stopping=False, **gen)
                                if keep is not None:
                                    keep.extend(out[:, 1:].tolist())

                    theirs: list[list[int]] = []
                    run_torch(theirs)
                    pad = processor.tokenizer.pad_token_id
                    same = sum(list(o.token_ids) == row[: len(o.token_ids)]
                               and all(t == pad for t in row[len(o.token_ids):]) for o, row in zip(ours, theirs))
                    t_ort = _cpu(run_ort, args.repeats) / len(images)
                    t_pt = _cpu(run_torch, args.repeats) / len(images)
                    print(f"{name:<9}{threads:>4}{batch:>6} | {t_ort * 1e3:>11.2f}{1 / t_ort:>12.0f} | "
                          f"{t_pt * 1e3:>13.2f}{1 / t_pt:>12.0f} | {t_pt / t_ort:>9.1f}{same:>6}/{len(images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

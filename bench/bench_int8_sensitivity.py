"""Issue 22, lever 2: int8 for the recogniser done properly, by per-node sensitivity.

    .venv/bin/python bench/bench_int8_sensitivity.py [--lines 200] [--calib-lines 100]
        [--method minmax|percentile|entropy] [--speed-lines 300] [--cache DIR]

The static QDQ recogniser of ``bench/bench_quantize.py`` read 5 points of CER worse than float.
This finds which nodes cause it: the shipped PP-OCRv6 recogniser (opset 13, ``quant_pre_process``)
is quantised with ``onnxruntime.quantization.quantize_static`` (QDQ, QUInt8 activations, QInt8
weights per channel, ``--method`` calibration on dev lines that are NOT evaluated, ranges computed
once and cached; inputs right-padded to one width, the stacking calibrators need it), its
convolutions and matrix products only; the CTC head's MatMul always stays float (so
:mod:`ocrstream.ocr.recognition.ctc_head` can cut it to the charset). Then:

1. every quantised node alone left in float (leave-one-out): the line CER ci on the first
   ``--lines`` dev lines, the nodes ranked by how much CER their quantisation costs;
2. greedily, the costliest nodes kept in float until the CER is within 0.1 point of float's;
3. CER/WER and CPU-ms per line on ``--speed-lines`` HELD-OUT lines (after the scored and the
   calibration ones; one line per call, 1 thread, interleaved) of
   fp32 ONNX Runtime, bf16 OpenVINO (where the CPU has it), and the chosen int8 model on both.

Models are made at run time from the shipped weights into ``--cache`` (default
``$TMPDIR/ocrstream-int8``); nothing is downloaded or committed. Skipped cleanly (exit 0) when
``../shared`` is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from bench.bench_pages import DATA  # noqa: E402
from bench.bench_quantize import ListReader, progress, recognizer_calibration  # noqa: E402
from ocrstream.ocr.evaluation import cer, wer  # noqa: E402
from ocrstream.ocr.recognition import ppocr  # noqa: E402
from ocrstream.ocr.recognition.ctc_head import find_head  # noqa: E402
from ocrstream.ocr.runtime.openvino_session import cpu_has_bf16  # noqa: E402
from ocrstream.training.manifest import load_image, read_manifest  # noqa: E402

QUANTISED_OPS = ["Conv", "MatMul"]


def prepared_model(cache: Path) -> Path:
    """The shipped recogniser at opset 13 after ``quant_pre_process``, its GELUs fused as the shipped
    recipe fuses them (:mod:`ocrstream.ocr.runtime.gelu_fusion`; cached)."""
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ocrstream.ocr.runtime.gelu_fusion import fuse_gelu

    target = cache / "rec.prep.gelu.onnx"
    if not target.exists():
        opset13, prep = cache / "rec.opset13.onnx", cache / "rec.prep.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(ppocr.model_path())), 13), str(opset13))
        quant_pre_process(str(opset13), str(prep), skip_symbolic_shape=True)
        model = onnx.load(str(prep))
        fuse_gelu(model)
        onnx.save(model, str(target))
    return target


def head_matmul(model: onnx.ModelProto) -> str:
    """Name of the MatMul feeding the output's Add -> Softmax (the CTC head)."""
    head = find_head(model)
    assert head is not None, "the model does not end in MatMul -> Add -> Softmax"
    return head[0].name


def quantised(prepared: Path, target: Path, reader_factory, method: str, cache_json: Path,
              keep_float: Sequence[str]) -> Path:
    """``quantize_static`` of ``prepared`` into ``target`` with ``keep_float`` nodes left in float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    quantize_static(str(prepared), str(target), reader_factory() if not cache_json.exists() else None,
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True, calibrate_method=methods[method], op_types_to_quantize=QUANTISED_OPS,
                    nodes_to_exclude=list(keep_float), calibration_cache_path=str(cache_json),
                    extra_options={"max_intermediate_outputs": 1})
    return target


CALIB_WIDTH = 320


def calibration_inputs(images: list[np.ndarray]) -> list[np.ndarray]:
    """``(1, 3, 48, CALIB_WIDTH)`` float32 inputs of the lines no wider than that, right-padded (the
    percentile and entropy calibrators stack every input, so they must share one shape)."""
    out = []
    for x in recognizer_calibration(images):
        if x.shape[3] <= CALIB_WIDTH:
            out.append(np.pad(x, ((0, 0), (0, 0), (0, 0), (0, CALIB_WIDTH - x.shape[3]))))
    return out


def line_cer(model: Path | None, images: list[np.ndarray], refs: list[str], backend: str = "onnxruntime") -> float:
    reader = ppocr.PPOCRRecognizer(device="cpu", threads=1, backend=backend, **({"model": model} if model else {}))
    return cer([r.text for r in reader.recognize(images)], refs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--lines", type=int, default=200, help="dev lines scored per configuration")
    parser.add_argument("--calib-lines", type=int, default=100, help="dev lines after them, for calibration")
    parser.add_argument("--method", default="percentile", choices=["minmax", "percentile", "entropy"])
    parser.add_argument("--speed-lines", type=int, default=300,
                        help="lines of the speed table, taken AFTER the scored and calibration lines (held out)")
    parser.add_argument("--budget", type=float, default=0.001, help="CER the int8 model may lose (0.001 = 0.1 point)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ocrstream-int8")
    args = parser.parse_args(argv)
    if not (args.data / "lines.jsonl").is_file():
        print(f"skipped: {args.data} absent")
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    records = read_manifest(args.data / "lines.jsonl", limit=args.lines + args.calib_lines + args.speed_lines)
    evaluated = records[: args.lines]
    calibrating = records[args.lines: args.lines + args.calib_lines]
    held_out = records[args.lines + args.calib_lines:]
    images, refs = [load_image(r) for r in evaluated], [r.text for r in evaluated]
    prepared = prepared_model(args.cache)
    model = onnx.load(str(prepared))
    head = head_matmul(model)
    nodes = [n.name for n in model.graph.node if n.op_type in QUANTISED_OPS and n.name != head]
    calib_json = args.cache / f"calib.{args.method}.{len(calibrating)}.json"
    name = model.graph.input[0].name
    factory = lambda: ListReader(name, calibration_inputs([load_image(r) for r in calibrating]))  # noqa: E731

    float_cer = line_cer(None, images, refs)
    all_int8 = quantised(prepared, args.cache / "rec.int8.all.onnx", factory, args.method, calib_json, [head])
    all_cer = line_cer(all_int8, images, refs)
    progress(f"float {100 * float_cer:.2f} %, every node int8 {100 * all_cer:.2f} % ({len(nodes)} nodes)")
    cost: dict[str, float] = {}
    trial = args.cache / "rec.int8.trial.onnx"
    for i, node in enumerate(nodes):
        cost[node] = all_cer - line_cer(quantised(prepared, trial, factory, args.method, calib_json, [head, node]),
                                        images, refs)
        progress(f"  {i + 1}/{len(nodes)} {node}: float alone gains {100 * cost[node]:+.2f} points")
    ranked = sorted(nodes, key=lambda n: -cost[n])
    print(f"\n{len(refs)} dev lines, calibration {args.method} on the next {len(calibrating)}; float CER ci "
          f"{100 * float_cer:.2f} %, all {len(nodes)} nodes int8 {100 * all_cer:.2f} %")
    print("| node kept in float alone | CER gained, points |\n|---|---|")
    for n in ranked[:12]:
        print(f"| {n} | {100 * cost[n]:+.2f} |")
    keep: list[str] = []
    chosen_cer = all_cer
    chosen = all_int8
    for n in ranked:
        if chosen_cer <= float_cer + args.budget or cost[n] <= 0:
            break
        keep.append(n)
        chosen = quantised(prepared, args.cache / "rec.int8.chosen.onnx", factory, args.method, calib_json, [head, *keep])
        chosen_cer = line_cer(chosen, images, refs)
        progress(f"  float: {len(keep)} nodes -> {100 * chosen_cer:.2f} %")
    print(f"\ngreedy: {len(keep)} of {len(nodes)} nodes kept in float ({', '.join(keep) or 'none'}): "
          f"CER ci {100 * chosen_cer:.2f} % (float {100 * float_cer:.2f} %)")

    speed = held_out  # neither scored for the choice nor calibrated on
    speed_images, speed_refs = [load_image(r) for r in speed], [r.text for r in speed]
    configs = {"fp32 onnxruntime": (None, "onnxruntime"), f"int8 ({len(keep)} float) onnxruntime": (chosen, "onnxruntime")}
    if cpu_has_bf16():
        configs |= {"bf16 openvino": (None, "openvino-bf16"), f"int8 ({len(keep)} float) openvino": (chosen, "openvino-bf16")}
    readers = {k: ppocr.PPOCRRecognizer(device="cpu", threads=1, backend=b, **({"model": m} if m else {}))
               for k, (m, b) in configs.items()}
    texts: dict[str, list[str]] = {k: [] for k in readers}
    spent = dict.fromkeys(readers, 0.0)
    for reader in readers.values():
        reader.recognize(speed_images[:4])
    for image in speed_images:
        for k, reader in readers.items():
            t0 = time.process_time()
            texts[k].append(reader.recognize([image])[0].text)
            spent[k] += time.process_time() - t0
    print(f"\n{len(speed)} held-out dev lines (after the scored and calibration ones), one per call, 1 thread, "
          f"interleaved; load average {os.getloadavg()[0]:.1f}")
    print("| recogniser | CER ci | WER ci | CPU-ms per line |\n|---|---|---|---|")
    for k in readers:
        print(f"| {k} | {100 * cer(texts[k], speed_refs):.2f} % | {100 * wer(texts[k], speed_refs):.2f} % | "
              f"{1000 * spent[k] / len(speed):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

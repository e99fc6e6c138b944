"""The inference backends (issue 22): chosen by capability, and the same readings from both on real
crops (the text lines of samples/receipt.png, cut by the real detector)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from ocrstream.ocr.detection import LineDetector, crop_line
from ocrstream.ocr.evaluation import cer
from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer
from ocrstream.ocr.runtime import onnx_session, openvino_session
from ocrstream.ocr.runtime.models import rapidocr_model
from ocrstream.ocr.runtime.openvino_session import OpenVINOSession

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
needs_bf16 = pytest.mark.skipif(not openvino_session.cpu_has_bf16(), reason="this CPU has no native bfloat16")


def test_auto_takes_bf16_only_where_the_cpu_has_it_and_never_for_cuda(monkeypatch):
    monkeypatch.delenv(onnx_session.INFERENCE_ENV, raising=False)
    monkeypatch.setattr(onnx_session, "cpu_has_bf16", lambda: True)
    assert onnx_session.resolve_backend("cpu") == "openvino-bf16"
    assert onnx_session.resolve_backend("cuda") == "onnxruntime"
    monkeypatch.setattr(onnx_session.ort, "get_available_providers", lambda: [onnx_session.CUDA_PROVIDER])
    assert onnx_session.resolve_backend("auto") == "onnxruntime"  # a GPU is there: CUDA wins
    monkeypatch.setattr(onnx_session, "cpu_has_bf16", lambda: False)
    assert onnx_session.resolve_backend("cpu") == "onnxruntime"
    monkeypatch.setenv(onnx_session.INFERENCE_ENV, "openvino-fp32")
    assert onnx_session.resolve_backend("cpu") == "openvino-fp32"
    with pytest.raises(ValueError, match="runs on the CPU"):
        onnx_session.resolve_backend("cuda")
    monkeypatch.setenv(onnx_session.INFERENCE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="expected one of auto, onnxruntime"):
        onnx_session.resolve_backend("cpu")


def test_openvino_session_answers_like_an_onnxruntime_one():
    model = rapidocr_model("PP-OCRv6_rec_small.onnx")
    ort_session = onnx_session.make_session(model, device="cpu", threads=1, backend="onnxruntime")
    ov_session = onnx_session.make_session(model, device="cpu", threads=1, backend="openvino-fp32")
    assert isinstance(ov_session, OpenVINOSession) and onnx_session.chosen_provider(ov_session) == "OpenVINO-CPU-fp32"
    assert ov_session.get_modelmeta().custom_metadata_map == ort_session.get_modelmeta().custom_metadata_map
    x = np.random.default_rng(0).random((3, 3, 48, 200), dtype=np.float32)
    (a,), (b,) = ort_session.run(None, {"x": x}), ov_session.run(None, {ov_session.get_inputs()[0].name: x})
    assert a.shape == b.shape and float(np.abs(a - b).max()) < 1e-3  # fp32: the same numbers


def test_bf16_on_a_cpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(openvino_session, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="needs a CPU with AVX-512 BF16"):
        OpenVINOSession(rapidocr_model("PP-OCRv6_rec_small.onnx"), "bf16")


@needs_bf16
def test_both_backends_read_the_receipts_lines_alike():
    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    readings = {}
    for backend in ("onnxruntime", "openvino-bf16"):
        detector = LineDetector(device="cpu", threads=1, backend=backend)
        lines = detector.detect(page)
        recognizer = PPOCRRecognizer(device="cpu", threads=1, backend=backend)
        readings[backend] = [r.text for r in recognizer.recognize([crop_line(page, line.quad) for line in lines])]
        assert recognizer.provider == ("OpenVINO-CPU-bf16" if backend != "onnxruntime" else "CPUExecutionProvider")
    fp32, bf16 = readings["onnxruntime"], readings["openvino-bf16"]
    assert len(fp32) == len(bf16) >= 10
    assert cer(bf16, fp32) <= 0.01, (fp32, bf16)


def test_openvino_runs_as_many_streams_as_the_recogniser_calls_at_once():
    recognizer = PPOCRRecognizer(device="cpu", threads=1, concurrent_calls=2, backend="openvino-fp32")
    compiled = recognizer._session._compiled
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2  # one thread per stream
    with pytest.raises(ValueError, match="streams"):
        OpenVINOSession(rapidocr_model("PP-OCRv6_rec_small.onnx"), "fp32", streams=0)


def test_the_detector_takes_one_thread_on_either_backend_unless_told(monkeypatch):
    monkeypatch.delenv(onnx_session.THREADS_ENV, raising=False)

    def threads(detector: LineDetector) -> int:
        session = detector._session
        if isinstance(session, OpenVINOSession):
            return int(session._compiled.get_property("INFERENCE_NUM_THREADS"))
        return int(session.get_session_options().intra_op_num_threads)

    assert threads(LineDetector(device="cpu", backend="openvino-fp32")) == 1
    assert threads(LineDetector(device="cpu", backend="onnxruntime")) == 1
    assert threads(LineDetector(device="cpu", backend="openvino-fp32", threads=2)) == 2
    monkeypatch.setenv(onnx_session.THREADS_ENV, "2")  # the operator's word: a process with cores of its own
    assert threads(LineDetector(device="cpu", backend="openvino-fp32")) == 2


#: measures in a fresh interpreter: inside the suite's process the heap other tests left behind moved the
#: cache-off figure from ~0 to 83 MiB (against 270 with the cache), which a ratio cannot tell from growth.
_USS_GROWTH = """
import sys
import numpy as np
import psutil
from ocrstream.ocr.runtime import openvino_session
from ocrstream.ocr.runtime.models import rapidocr_model

openvino_session.RUNTIME_CACHE_CAPACITY = sys.argv[1]
precision = "bf16" if openvino_session.cpu_has_bf16() else "fp32"  # bf16: what the stages run here
session = openvino_session.OpenVINOSession(rapidocr_model("PP-OCRv6_rec_small.onnx"), precision, threads=1)
name = session.get_inputs()[0].name
shapes = [(1 + k % 4, 48 + 8 * k) for k in range(160)][::-1]  # distinct (batch, width), largest first
for n, w in shapes[:60]:  # the largest: the working memory of every later batch is in place
    session.run(None, {name: np.zeros((n, 3, 48, w), np.float32)})
before = psutil.Process().memory_full_info().uss  # unique pages: other processes sharing libraries do not move it
for n, w in shapes[10:]:
    session.run(None, {name: np.zeros((n, 3, 48, w), np.float32)})
print((psutil.Process().memory_full_info().uss - before) / 2**20)
"""


def _uss_growth_over_new_shapes(capacity: str) -> float:
    """MiB of USS one recogniser session on OpenVINO gains over 100 batches of shapes it has not
    seen (after 60 larger ones), its runtime cache capacity set to ``capacity``; measured in a new
    Python process (:data:`_USS_GROWTH`), so no other test's heap moves it."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _USS_GROWTH, capacity], capture_output=True, text=True,
                          timeout=300, check=True)
    return float(done.stdout.split()[-1])


def test_openvino_memory_does_not_grow_with_every_new_input_shape():
    """Issue 24's soak: the CPU plugin's per-shape runtime cache (5,000 entries by default) made
    the recogniser grow with every new batch shape; off (RUNTIME_CACHE_CAPACITY 0) it does not.
    Compared with the default, never against a fixed figure: the allocator's own growth differs
    between hosts (CI measured 43 MiB off against 334 MiB on, in the suite's process)."""
    off = _uss_growth_over_new_shapes("0")
    default = _uss_growth_over_new_shapes("5000")
    print(f"\nUSS growth over 100 new shapes: cache off {off:.1f} MiB, OpenVINO's default {default:.1f} MiB")
    assert off * 4 < default, (off, default)


def test_auto_keeps_models_of_ever_new_shapes_on_onnxruntime_in_int8(monkeypatch):
    monkeypatch.delenv(onnx_session.INFERENCE_ENV, raising=False)
    monkeypatch.setattr(onnx_session, "cpu_has_bf16", lambda: True)
    assert onnx_session.resolve_backend("cpu", shapes_vary=True) == "onnxruntime-int8"  # auto: the recogniser
    assert onnx_session.resolve_backend("cpu") == "openvino-bf16"
    assert onnx_session.resolve_backend("cpu", "openvino-bf16", shapes_vary=True) == "openvino-bf16"  # asked for
    monkeypatch.setattr(onnx_session.ort, "get_available_providers", lambda: [onnx_session.CUDA_PROVIDER])
    assert onnx_session.resolve_backend("auto", shapes_vary=True) == "onnxruntime"  # CUDA: fp32


def test_int8_recogniser_reads_the_receipt_like_fp32_and_is_made_once(tmp_path, monkeypatch):

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    crops = [crop_line(page, line.quad) for line in LineDetector(device="cpu", threads=1).detect(page)]
    fp32 = PPOCRRecognizer(device="cpu", threads=1, backend="onnxruntime")
    q = PPOCRRecognizer(device="cpu", threads=1, backend="onnxruntime-int8")
    assert q.provider == "CPUExecutionProvider-int8" and fp32.provider == "CPUExecutionProvider"
    assert q.output_columns is not None  # the head stayed float, so it was cut to the charset
    texts_fp32, texts_int8 = [r.text for r in fp32.recognize(crops)], [r.text for r in q.recognize(crops)]
    assert len(crops) >= 10 and cer(texts_int8, texts_fp32) <= 0.02, (texts_fp32, texts_int8)
    made = list((tmp_path / "cache" / "ocrstream" / "int8").glob("*.onnx"))
    assert len(made) == 1
    ops = [n.op_type for n in onnx.load(str(made[0])).graph.node]
    assert ops.count("Gelu") == 13 and "Erf" not in ops  # fused before quantising (gelu_fusion)
    stamp = made[0].stat().st_mtime_ns
    PPOCRRecognizer(device="cpu", threads=1, backend="onnxruntime-int8")
    assert made[0].stat().st_mtime_ns == stamp  # the second recogniser loads it


def test_int8_applies_only_to_the_model_it_was_measured_on(tmp_path):
    from ocrstream.ocr.recognition import int8

    other = tmp_path / "other.onnx"
    other.write_bytes(rapidocr_model("PP-OCRv6_rec_small.onnx").read_bytes() + b"\0")
    with pytest.raises(int8.Int8Unavailable):
        int8.int8_model(other, tmp_path)
    assert not list(tmp_path.glob("*.int8.*"))


def _tuned_variant(folder: Path, served: bool | None) -> Path:
    """A stand-in for a fine-tuned model: the shipped graph with its smallest weight matrix (in the neck)
    nudged (new sha256, same node names), and its manifest; ``served`` is the manifest's ``int8.served`` (None: no
    ``int8`` entry, a manifest written before fine-tuning measured it)."""
    import json

    from onnx import numpy_helper

    from ocrstream.ocr.recognition.model_manifest import FORMAT, sha256_file

    base = rapidocr_model("PP-OCRv6_rec_small.onnx")
    model = onnx.load(str(base))
    weights = {t.name: t for t in model.graph.initializer}
    name = min((n for n in weights if len(weights[n].dims) == 2), key=lambda n: np.prod(weights[n].dims))
    array = numpy_helper.to_array(weights[name])
    weights[name].CopyFrom(numpy_helper.from_array((array * 1.001).astype(array.dtype), name))
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))
    sha = sha256_file(folder / "model.onnx")
    manifest = {"format": FORMAT, "kind": "ppocr", "model": "model.onnx", "sha256": sha, "id": f"ppocr-ft-{sha[:12]}",
                "base": {"name": base.name, "sha256": sha256_file(base)}}
    if served is not None:
        manifest["int8"] = {"served": served}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_model_tuned_from_the_shipped_one_serves_in_int8_when_its_manifest_says_so(tmp_path, monkeypatch):
    from ocrstream.ocr.recognition import int8

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    served = _tuned_variant(tmp_path / "served", True)
    with pytest.raises(int8.Int8Unavailable):  # without the base's sha256 it is just another model
        int8.int8_model(served / "model.onnx", tmp_path / "made")
    made = int8.int8_model(served / "model.onnx", tmp_path / "made", base_sha256=int8.MODEL_SHA256)
    assert made.name.startswith("model.") and f".int8.{int8.recipe_key()}." in made.name  # its own sha in the name

    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    crops = [crop_line(page, line.quad) for line in LineDetector(device="cpu", threads=1).detect(page)]
    fp32 = PPOCRRecognizer(model=served, device="cpu", threads=1, backend="onnxruntime")
    q = PPOCRRecognizer(model=served, device="cpu", threads=1, backend="onnxruntime-int8")
    assert q.provider == "CPUExecutionProvider-int8" and fp32.provider == "CPUExecutionProvider"
    assert q.version == fp32.version and q.version.startswith("ppocr-ft-")
    texts_fp32, texts_int8 = [r.text for r in fp32.recognize(crops)], [r.text for r in q.recognize(crops)]
    assert len(crops) >= 10 and cer(texts_int8, texts_fp32) <= 0.02, (texts_fp32, texts_int8)

    for verdict in (False, None):  # measured over the margin, or never measured: fp32
        other = PPOCRRecognizer(model=_tuned_variant(tmp_path / f"not-{verdict}", verdict), device="cpu",
                                threads=1, backend="onnxruntime-int8")
        assert other.provider == "CPUExecutionProvider"
    bare = PPOCRRecognizer(model=served / "model.onnx", device="cpu", threads=1, backend="onnxruntime-int8")
    assert bare.provider == "CPUExecutionProvider"  # an .onnx file without a manifest: fp32


def test_the_int8_cache_keeps_the_newest_tuned_models_and_always_the_shipped_one(tmp_path):
    import os

    from ocrstream.ocr.recognition import int8

    key = int8.recipe_key()
    shipped = tmp_path / f"PP-OCRv6_rec_small.int8.{key}.onnx"
    shipped.write_bytes(b"s")
    os.utime(shipped, ns=(1, 1))  # the oldest of all
    tuned = []
    for k in range(int8.TUNED_KEPT + 2):
        path = tmp_path / f"model.{k:016x}.int8.{key}.onnx"
        path.write_bytes(b"t")
        os.utime(path, ns=(10 + k, 10 + k))
        tuned.append(path)
    deleted = int8.prune_tuned(tmp_path)
    assert sorted(deleted) == sorted(tuned[:2])
    assert shipped.is_file() and all(p.is_file() for p in tuned[2:])
    assert int8.prune_tuned(tmp_path) == []

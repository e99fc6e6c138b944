"""The recogniser's output layer cut to its character set (issue 22, :mod:`ocrstream.ocr.recognition.ctc_head`):
the same readings and renormalised probabilities on real crops (the lines of samples/receipt.png, cut by the
real detector), and models that do not end in MatMul -> Add -> Softmax left alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ocrstream.ocr.detection import LineDetector, crop_line
from ocrstream.ocr.recognition import ctc_head
from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer, make_batch, resized_width

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.fixture(scope="module")
def receipt_crops() -> list[np.ndarray]:
    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    return [crop_line(page, line.quad) for line in LineDetector(device="cpu", threads=1).detect(page)]


def test_cut_head_reads_the_same_with_renormalised_probabilities(receipt_crops):
    cut = PPOCRRecognizer(device="cpu", threads=1)
    whole = PPOCRRecognizer(device="cpu", threads=1, cut_head=False)  # the model as shipped, columns sliced
    assert whole._columns is not None and cut._columns is None
    assert len(receipt_crops) >= 10
    assert [r.text for r in cut.recognize(receipt_crops)] == [r.text for r in whole.recognize(receipt_crops)]
    crop = receipt_crops[0]
    batch = make_batch([crop], [resized_width(*crop.shape[:2])])
    a, b = cut.forward(batch), whole.forward(batch)[..., whole._columns]
    assert a.shape == b.shape and a.shape[-1] == len(cut._chars) < 400
    np.testing.assert_allclose(a, b / b.sum(axis=-1, keepdims=True), atol=1e-5)
    assert cut.batch_bytes(320, 8) < whole.batch_bytes(320, 8) / 10  # the output bound follows the cut


def _tiny(last: str = "Softmax", classes: int = 6) -> onnx.ModelProto:
    """x (N, T, 4) -> Softmax(MatMul(x, W (4, classes)) + b) over the last axis (or another op)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, classes)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Identity", ["mm"], ["mm2"]),
             helper.make_node("Add", ["mm2", "b"], ["logits"]),
             helper.make_node(last, ["logits"], ["y"], **({"axis": -1} if last == "Softmax" else {}))]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, classes])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_restrict_head_on_a_tiny_model_and_the_ones_it_leaves_alone():
    import onnxruntime as ort

    model, keep = _tiny(), np.array([0, 2, 5])
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    full = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert ctc_head.restrict_head(model, keep)
    cut = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert cut.shape == (2, 3, 3)
    np.testing.assert_allclose(cut, full[..., keep] / full[..., keep].sum(-1, keepdims=True), rtol=1e-5)

    other = _tiny(last="Sigmoid")
    before = other.SerializeToString()
    assert not ctc_head.restrict_head(other, keep) and other.SerializeToString() == before
    with pytest.raises(IndexError):
        ctc_head.restrict_head(_tiny(), np.array([0, 6]))

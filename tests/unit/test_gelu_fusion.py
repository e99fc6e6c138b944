"""The exact GELU's five nodes fused into one (ocrstream/ocr/runtime/gelu_fusion.py): the same outputs
from ONNX Runtime, only the pattern fused, and the shipped recogniser's 13 GELUs found."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ocrstream.ocr.runtime.gelu_fusion import MS_DOMAIN, fuse_gelu
from ocrstream.ocr.runtime.models import rapidocr_model

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def gelu_model(sqrt2: float = math.sqrt(2.0), erf_is_output: bool = False) -> onnx.ModelProto:
    """x (2, 5) -> Relu -> GELU as Paddle2ONNX writes it -> Add(1) -> y; optionally Erf's output
    also a graph output."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), name) for name, v in
              (("sqrt2", sqrt2), ("one", 1.0), ("half", 0.5))]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Div", ["r", "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["r", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["g"]),
             helper.make_node("Add", ["g", "one"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])]
    if erf_is_output:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 5]))
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              outputs, consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusion of its own
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_the_pattern_becomes_one_gelu_node_with_the_same_outputs():
    model = gelu_model()
    x = {"x": np.random.default_rng(0).normal(0, 3, (2, 5)).astype(np.float32)}
    before = run(model, x)[0]
    assert fuse_gelu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Relu", "Gelu", "Add"]
    assert model.graph.node[1].domain == MS_DOMAIN and model.graph.node[1].output == ["g"]
    assert any(op.domain == MS_DOMAIN for op in model.opset_import)
    np.testing.assert_allclose(run(model, x)[0], before, atol=1e-5)
    assert fuse_gelu(model) == 0  # nothing left to fuse


@pytest.mark.parametrize("model", [gelu_model(sqrt2=1.5), gelu_model(erf_is_output=True)],
                         ids=["another constant", "an intermediate read elsewhere"])
def test_only_the_exact_pattern_whose_parts_nothing_else_reads_is_fused(model):
    ops = [n.op_type for n in model.graph.node]
    assert fuse_gelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ops


def test_the_shipped_recogniser_reads_a_real_line_alike_with_its_13_gelus_fused():
    model = onnx.load(str(rapidocr_model("PP-OCRv6_rec_small.onnx")))
    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    line = cv2.resize(page[: page.shape[0] // 12], (320, 48)).astype(np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
    feeds = {model.graph.input[0].name: line}
    before = run(model, feeds)[0]
    assert fuse_gelu(model) == 13
    assert not [n for n in model.graph.node if n.op_type == "Erf"]
    after = run(model, feeds)[0]
    assert np.abs(after - before).max() < 1e-4
    assert (after.argmax(-1) == before.argmax(-1)).all()

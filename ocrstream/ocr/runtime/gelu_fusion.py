"""GELU written out as five ONNX nodes, fused into one ``Gelu`` before a model is quantised.

Paddle2ONNX writes the exact GELU (Hendrycks & Gimpel 2016, ``x * Phi(x)``) as
``Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)``. ONNX Runtime fuses that pattern into its
``com.microsoft`` ``Gelu`` kernel in a float model (``GeluFusion``, graph optimisation level
extended), but not once ``onnxruntime.quantization`` has put a ``DequantizeLinear`` on each of
``x``'s two uses: the quantised PP-OCRv6 recogniser then ran its 13 GELUs as 65 element-wise
nodes (``Erf``, ``Div``, ``Add`` and ``Mul`` were 25 % of its kernel time). :func:`fuse_gelu`
rewrites the pattern before quantisation, so the quantiser sees one float node.

The fused node computes the same function (ONNX Runtime's ``Gelu`` is the exact, erf form; its
tanh approximation ``FastGelu`` measured no faster here). Measured 2026-12-07 (1 thread, this class
of host, before and after interleaved in one run):

* the int8 recogniser alone, ``(8, 3, 48, 320)`` per call with the whole output layer: 72-77 -> 60-66 ms;
* as ``PPOCRRecognizer`` reads the 1,500 dev lines (batches of 32, output layer cut to the charset):
  6.32 / 6.61 -> 5.47 / 5.38 CPU-ms per line; 4 readings differ (CER ci 1.403 -> 1.414 %, WER ci
  8.005 -> 8.095 %), as the quantised activations round differently around the one node;
* the 60 dev pages (``bench/bench_pages.py --threads 1``, ABBA): recognition 287 / 290 -> 253 / 236
  CPU-ms per page, the whole page 493 / 490 -> 458 / 440; page CER ci 2.99 % both, WER ci 12.67 -> 12.59 %.
"""

from __future__ import annotations

import math
from collections import defaultdict

import onnx
from onnx import helper, numpy_helper

__all__ = ["MS_DOMAIN", "fuse_gelu"]

#: the operator domain of ONNX Runtime's contrib operators (``Gelu``).
MS_DOMAIN = "com.microsoft"
_TOLERANCE = 1e-4


def _scalar(initializers: dict[str, onnx.TensorProto], name: str) -> float | None:
    tensor = initializers.get(name)
    if tensor is None:
        return None
    value = numpy_helper.to_array(tensor)
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _is(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= _TOLERANCE


class _Graph:
    """Producers-to-consumers index and constant lookup of one graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.initializers = {t.name: t for t in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}

    def only_consumer(self, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto | None:
        """The single node reading ``node``'s output, if it is an ``op_type`` and the output is not
        also a graph output."""
        users = self.consumers[node.output[0]]
        if len(users) != 1 or users[0].op_type != op_type or node.output[0] in self.outputs:
            return None
        return users[0]

    def other_input(self, node: onnx.NodeProto, name: str) -> str:
        """The input of the two-input ``node`` that is not ``name``."""
        return str(node.input[1] if node.input[0] == name else node.input[0])


def _match(g: _Graph, div: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The five nodes ``Div(x, sqrt2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)`` starting at ``div``."""
    if div.op_type != "Div" or not _is(_scalar(g.initializers, div.input[1]), math.sqrt(2.0)):
        return None
    x = div.input[0]
    erf = g.only_consumer(div, "Erf")
    if erf is None:
        return None
    add = g.only_consumer(erf, "Add")
    if add is None or not _is(_scalar(g.initializers, g.other_input(add, erf.output[0])), 1.0):
        return None
    mul = g.only_consumer(add, "Mul")
    if mul is None or g.other_input(mul, add.output[0]) != x:
        return None
    half = g.only_consumer(mul, "Mul")
    if half is None or not _is(_scalar(g.initializers, g.other_input(half, mul.output[0])), 0.5):
        return None
    return [div, erf, add, mul, half]


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace every exact-GELU pattern of ``model``'s main graph by one ``com.microsoft`` ``Gelu``
    node, in place (same input ``x``, same output name, so tensor names the quantiser's calibration
    ranges refer to are kept); adds the ``com.microsoft`` opset import when it fused any.

    Only the pattern whose intermediate tensors have no other reader is fused: the rewrite never
    changes what the rest of the graph computes. Its three constants (``sqrt 2``, ``1``, ``0.5``,
    within 1e-4) must be scalar initializers, as the exporter writes them; ``Constant`` nodes are
    not followed. Subgraphs (``If``/``Loop`` bodies) are not visited.

    Returns:
        The number of GELUs fused (13 for the PP-OCRv6 small recogniser).
    """
    graph = model.graph
    index = _Graph(graph)
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for node in graph.node:
        nodes = _match(index, node) if id(node) not in dropped else None
        if nodes is None:
            continue
        fused = helper.make_node("Gelu", [node.input[0]], [nodes[-1].output[0]], name=f"Gelu_fused_{len(replaced)}",
                                 domain=MS_DOMAIN)
        replaced[id(nodes[0])] = fused
        dropped.update(id(n) for n in nodes)
    if not replaced:
        return 0
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) in replaced or id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    if not any(op.domain == MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(replaced)

"""The recogniser's CTC output layer cut to the characters it may emit.

PP-OCR recognition models end in a linear layer and a softmax over the whole dictionary,
``Softmax(MatMul(features (N, T, D), W (D, C)) + b (C,))``, with ``C = 18710`` for PP-OCRv6
(``D = 120``). The recogniser takes its arg-max over a character set only (``PPOCRRecognizer``'s
``charset``: blank, the set's symbols and space, 316 columns for ``latin``), so almost all of that
layer's work, and of the softmax's ``exp``, is thrown away. :func:`restrict_head` keeps only the
columns of ``W`` and ``b`` the set needs:

* the arg-max over the kept columns is the same (their logits are unchanged; softmax is monotonic);
* the probabilities are renormalised over the kept columns: ``p'(c) = p(c) / sum_kept p``
  (max difference to the sliced full output, renormalised: 2.7e-6 on random inputs);
* the output is ``(N, T, K)`` float32 with ``K = len(keep)``: 59x smaller for ``latin``.

Measured for issue 22 (1 thread, one process, this class of host; ``bench/bench_backends.py`` gives
the readings): a crop ``(1, 3, 48, 200)`` 7.9 -> 6.6 ms on ONNX Runtime fp32, 4.8 -> 3.8 ms on
OpenVINO bf16; ``(8, 3, 48, 320)`` 93 -> 80 ms and 51 -> 38 ms.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["find_head", "restrict_head"]


def _producer(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if name in n.output), None)


def _through_identities(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    node = _producer(graph, name)
    while node is not None and node.op_type == "Identity":
        node = _producer(graph, node.input[0])
    return node


def _softmax_is_last_axis(node: onnx.NodeProto, rank: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return axis in (-1, rank - 1)


def find_head(model: onnx.ModelProto) -> tuple[onnx.NodeProto, str, onnx.NodeProto] | None:
    """The final ``MatMul -> Add -> Softmax`` of a model with one output: ``(matmul, bias initializer
    name, softmax)`` when the MatMul's weight and the Add's bias are initializers (Identity nodes
    between them allowed, as paddle2onnx writes them), else None."""
    graph = model.graph
    if len(graph.output) != 1:
        return None
    softmax = _through_identities(graph, graph.output[0].name)
    add = _through_identities(graph, softmax.input[0]) if softmax is not None and softmax.op_type == "Softmax" else None
    if softmax is None or add is None or add.op_type != "Add":
        return None
    inits = {i.name for i in graph.initializer}
    bias_name = next((i for i in add.input if i in inits), None)
    other = next((i for i in add.input if i not in inits), None)
    matmul = _through_identities(graph, other) if other is not None else None
    if bias_name is None or matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in inits:
        return None
    return matmul, bias_name, softmax


def restrict_head(model: onnx.ModelProto, keep: np.ndarray) -> bool:
    """Cut the model's final ``MatMul -> Add -> Softmax`` to the output columns ``keep``, in place.

    Args:
        model: an ONNX recognition model whose single output is ``Softmax(MatMul(x, W) + b)`` over
            its last axis, ``W`` and ``b`` initializers of shapes ``(D, C)`` and ``(C,)``
            (:func:`find_head`).
        keep: column indices to keep, ``(K,)`` int, ascending, each in ``[0, C)``.

    Returns:
        True when the layer was cut; False (model untouched) when the model does not end this way.

    Raises:
        IndexError: an index of ``keep`` is outside ``[0, C)``.
    """
    head = find_head(model)
    if head is None:
        return False
    matmul, bias_name, softmax = head
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    weight, bias = numpy_helper.to_array(inits[matmul.input[1]]), numpy_helper.to_array(inits[bias_name])
    out_dims = graph.output[0].type.tensor_type.shape.dim
    if weight.ndim != 2 or bias.shape != (weight.shape[1],) or not _softmax_is_last_axis(softmax, len(out_dims) or 3):
        return False
    if keep.size and (keep.min() < 0 or keep.max() >= weight.shape[1]):
        raise IndexError(f"keep holds columns outside [0, {weight.shape[1]})")
    inits[matmul.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight[:, keep]), matmul.input[1]))
    inits[bias_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(bias[keep]), bias_name))
    for value in (*graph.output, *graph.value_info):  # shapes recorded downstream of the layer
        dims = value.type.tensor_type.shape.dim
        if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value == weight.shape[1]:
            dims[-1].dim_value = int(keep.size)
    return True

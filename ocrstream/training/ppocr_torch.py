"""The shipped PP-OCRv6 recognition ONNX model as a trainable PyTorch module, and back to ONNX.

Conversion (:func:`convert`): a small graph interpreter (:class:`OnnxModule`) for the 25 ONNX
operators this model uses, each mapped onto its torch function (why not onnx2torch: see the
class). ``auto_pad=SAME_UPPER`` (two 2x2 stride-1 convolutions and one 2x2 stride-1 max-pool here) is
first rewritten by :func:`explicit_pads`: for stride 1 ONNX SAME padding is input-size independent,
total ``(k - 1) * dilation`` per axis with the extra pixel at the end for SAME_UPPER (ONNX operator
spec, ``Conv``), i.e. top/left 0, bottom/right 1 here. The final ``Softmax`` is cut off
(:func:`strip_softmax`) so the module returns logits ``(N, T, 18710)`` for the CTC loss.

Back to ONNX (:func:`write_back`): the trained parameters are written into the initializers of the
*original* graph (same names), so the result keeps the shipped contract exactly (input ``x``
``(N, 3, 48, W)``, softmax output, SAME padding, ``character`` metadata) and
:class:`~ocrstream.ocr.recognition.ppocr.PPOCRRecognizer` serves it unchanged. :func:`parity` measures
agreement of any two implementations (logits or probabilities, greedy text) on given crops.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer, label_table, make_batch, model_path, resized_width

__all__ = ["OPS", "ConversionError", "OnnxModule", "Parity", "TorchPPOCR", "convert", "explicit_pads", "load_base",
           "logits_model", "ort_logits_runner", "parity", "strip_softmax", "torch_runner", "write_back"]


class ConversionError(RuntimeError):
    """The ONNX graph has a construct this converter does not handle (e.g. SAME padding with stride > 1)."""


def explicit_pads(model: onnx.ModelProto) -> int:
    """Rewrite ``auto_pad=SAME_UPPER|SAME_LOWER`` of stride-1 Conv/MaxPool/AveragePool as ``pads``, in place.

    Returns the number of nodes rewritten.

    Raises:
        ConversionError: a SAME-padded node has a stride other than 1.
    """
    done = 0
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["auto_pad"].s if "auto_pad" in attrs else b"NOTSET"
        if mode not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        kernel = list(attrs["kernel_shape"].ints)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * len(kernel)
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * len(kernel)
        if any(s != 1 for s in strides):
            raise ConversionError(f"{node.name}: auto_pad {mode.decode()} with strides {strides} depends on input size")
        total = [(k - 1) * d for k, d in zip(kernel, dilations)]
        begin = [t // 2 if mode == b"SAME_UPPER" else t - t // 2 for t in total]
        end = [t - b for t, b in zip(total, begin)]
        node.attribute.remove(attrs["auto_pad"])
        if "pads" in attrs:
            node.attribute.remove(attrs["pads"])
        node.attribute.append(helper.make_attribute("pads", begin + end))
        done += 1
    return done


def strip_softmax(model: onnx.ModelProto) -> None:
    """Remove the graph's final ``Softmax`` so its output is the logits (in place).

    Raises:
        ConversionError: the single graph output is not produced by a Softmax.
    """
    out = model.graph.output[0]
    last = [n for n in model.graph.node if out.name in n.output]
    if len(model.graph.output) != 1 or len(last) != 1 or last[0].op_type != "Softmax":
        raise ConversionError("expected one graph output produced by Softmax")
    model.graph.node.remove(last[0])
    out.name = last[0].input[0]


def load_base(path: str | Path | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """``(shipped graph, CTC label table)`` of the recognition ONNX (default: the shipped one).

    The label table is ``["blank", *dictionary, " "]`` (:func:`ocrstream.ocr.recognition.ppocr.label_table`).

    Raises:
        ConversionError: the model has no ``character`` metadata.
    """
    model = onnx.load(str(path or model_path()))
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ConversionError("recognition model has no 'character' metadata")
    return model, label_table(meta["character"])


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, *, pads=(0, 0, 0, 0), strides=(1, 1), dilations=(1, 1), group=1, **_):
    top, left, bottom, right = pads
    if (top, left) != (bottom, right):
        x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
    return F.conv2d(x, w, b, stride=tuple(strides), padding=(top, left), dilation=tuple(dilations), groups=group)


def _max_pool(x, *, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), ceil_mode=0, **_):
    top, left, bottom, right = pads
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, tuple(kernel_shape), tuple(strides), ceil_mode=bool(ceil_mode))


def _avg_pool(x, *, kernel_shape, strides=(1, 1), pads=(0, 0, 0, 0), ceil_mode=0, count_include_pad=0, **_):
    if any(pads):
        raise ConversionError("padded AveragePool is not supported")
    return F.avg_pool2d(x, tuple(kernel_shape), tuple(strides), ceil_mode=bool(ceil_mode))


def _softmax(x, *, axis=1, **_):
    if axis not in (-1, x.dim() - 1):  # opset < 13 flattens at ``axis``: the same only for the last axis
        raise ConversionError(f"Softmax over axis {axis} of a {x.dim()}-d tensor is not supported")
    return torch.softmax(x, dim=-1)


def _slice(x, starts, ends, axes=None, steps=None, **_):
    axes = range(len(starts)) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    index = [slice(None)] * x.dim()
    for a, s, e, st in zip(axes, starts.tolist(), ends.tolist(), steps):
        index[a] = slice(s, min(e, 2**62), st)
    return x[tuple(index)]


def _reshape(x, shape, **_):
    dims = [x.shape[i] if d == 0 else d for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _div(a, b, **_):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


#: ONNX operator (opset 11 semantics) -> torch function of (inputs..., **attributes).
OPS: dict[str, Callable[..., torch.Tensor]] = {
    "Identity": lambda x, **_: x,
    "Add": lambda a, b, **_: a + b, "Sub": lambda a, b, **_: a - b, "Mul": lambda a, b, **_: a * b, "Div": _div,
    "Pow": lambda a, b, **_: torch.pow(a, b), "Sqrt": lambda x, **_: torch.sqrt(x), "Erf": lambda x, **_: torch.erf(x),
    "Relu": lambda x, **_: F.relu(x), "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "HardSigmoid": lambda x, alpha=0.2, beta=0.5, **_: torch.clamp(alpha * x + beta, 0.0, 1.0),
    "MatMul": lambda a, b, **_: torch.matmul(a, b),
    "ReduceMean": lambda x, axes, keepdims=1, **_: x.mean(dim=tuple(axes), keepdim=bool(keepdims)),
    "Transpose": lambda x, perm, **_: x.permute(*perm),
    "Squeeze": lambda x, axes, **_: x.squeeze(tuple(axes)),
    "Unsqueeze": lambda x, axes, **_: _unsqueeze(x, axes),
    "Concat": lambda *xs, axis, **_: torch.cat(xs, dim=axis),
    "Shape": lambda x, **_: torch.tensor(x.shape, dtype=torch.int64),
    "Slice": _slice, "Reshape": _reshape, "Softmax": _softmax,
    "Conv": _conv, "MaxPool": _max_pool, "AveragePool": _avg_pool,
    "BatchNormalization": lambda x, s, b, m, v, epsilon=1e-5, **_: F.batch_norm(x, m, v, s, b, False, 0.0, epsilon),
}


def _unsqueeze(x, axes):
    for a in sorted(axes):
        x = x.unsqueeze(a)
    return x


class OnnxModule(torch.nn.Module):
    """A PyTorch module that runs an ONNX graph node by node (the operators in :data:`OPS`).

    Float initializers with more than one element become ``nn.Parameter`` (except batch-norm
    running statistics); the rest (shapes, scalars such as epsilons) are constant buffers. A
    parameter's ONNX initializer name is kept in :attr:`names`, so trained weights can be written
    back into the graph (:func:`write_back`). Batch-norm always uses its running statistics.

    Why not onnx2torch (tried first): it imports torchvision, whose only build on this machine's
    mirror is CUDA-linked and fails to import beside ``torch==2.13.0+cpu`` (and, installed, breaks
    transformers' ``TrOCRProcessor``); and it keeps MatMul/Add initializers as buffers, so the
    sequence neck and CTC head would not train.

    Input: the graph's inputs as tensors; output: its first output.

    Raises:
        ConversionError: an operator outside :data:`OPS`, or an unsupported attribute.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - set(OPS))
        if unknown:
            raise ConversionError(f"unsupported ONNX operators: {unknown}")
        stats = {name for n in graph.node if n.op_type == "BatchNormalization" for name in n.input[3:5]}
        self.names: dict[str, str] = {}  # torch parameter name -> initializer name
        self._consts: dict[str, str] = {}  # initializer name -> buffer name
        for k, init in enumerate(graph.initializer):
            array = numpy_helper.to_array(init)
            tensor = torch.from_numpy(array.copy())
            if array.dtype == np.float32 and array.size > 1 and init.name not in stats:
                key = f"p{k}"
                self.register_parameter(key, torch.nn.Parameter(tensor))
                self.names[key] = init.name
            else:
                key = f"c{k}"
                self.register_buffer(key, tensor, persistent=False)
            self._consts[init.name] = key
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        self._inputs = [i.name for i in graph.input if i.name not in self._consts]
        self._output = graph.output[0].name
        self.consumers: dict[str, list[int]] = {}
        for idx, (_, inputs, _, _) in enumerate(self._nodes):
            for name in inputs:
                self.consumers.setdefault(name, []).append(idx)

    def node_index(self, op_type: str) -> int:
        """Index (graph order) of the first node of ``op_type``; -1 if none."""
        return next((i for i, n in enumerate(self._nodes) if n[0] == op_type), -1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run the graph on its (non-initializer) inputs in order; returns its first output."""
        values: dict[str, torch.Tensor] = dict(zip(self._inputs, inputs))
        for name, key in self._consts.items():
            values[name] = getattr(self, key)
        for op, ins, outs, attrs in self._nodes:
            args = [values[i] if i else None for i in ins]
            while args and args[-1] is None:
                args.pop()
            values[outs[0]] = OPS[op](*args, **attrs)
        return values[self._output]


def convert(model: onnx.ModelProto) -> OnnxModule:
    """The recognition graph as a trainable logits module (copy: ``model`` is not changed).

    :func:`explicit_pads` and :func:`strip_softmax` are applied to a copy first, so the module maps
    ``(N, 3, 48, W)`` float32 -> logits ``(N, ceil(W / 8), C)``.
    """
    prepared = copy.deepcopy(model)
    explicit_pads(prepared)
    strip_softmax(prepared)
    return OnnxModule(prepared)


def write_back(module: OnnxModule, model: onnx.ModelProto, out: str | Path) -> Path:
    """Save ``model`` (the original graph: softmax, SAME padding, metadata kept) with ``module``'s
    parameters written into its initializers (same names, shapes, dtype float32)."""
    tuned = copy.deepcopy(model)
    params = dict(module.named_parameters())
    by_name = {init_name: params[key] for key, init_name in module.names.items()}
    for init in tuned.graph.initializer:
        if init.name in by_name:
            init.CopyFrom(numpy_helper.from_array(by_name[init.name].detach().cpu().numpy().astype(np.float32), init.name))
    onnx.checker.check_model(tuned)
    onnx.save(tuned, str(out))
    return Path(out)


def logits_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph that outputs logits (softmax cut), for ONNX Runtime parity checks."""
    prepared = copy.deepcopy(model)
    strip_softmax(prepared)
    return prepared


class TorchPPOCR(PPOCRRecognizer):
    """:class:`PPOCRRecognizer` whose model call runs a PyTorch logits module (same pre-processing
    and decoding as served): for validation during training and parity checks."""

    def __init__(self, module: torch.nn.Module, **options) -> None:
        options.setdefault("threads", 1)
        options.setdefault("device", "cpu")
        super().__init__(**options)
        self.module = module

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, 48, W)`` float32 -> ``(N, T, C)`` softmax probabilities from the torch module, over
        the served model's output columns (``output_columns``: the charset's, as the cut ONNX head)."""
        with torch.no_grad():
            logits = self.module(torch.from_numpy(batch))
            if self.output_columns is not None:
                logits = logits[..., torch.from_numpy(self.output_columns)]
            return torch.softmax(logits, dim=-1).numpy()


@dataclass(frozen=True)
class Parity:
    """Agreement of two implementations on the same crops.

    Attributes:
        max_abs_diff: max |a - b| over every output value (logits or probabilities, see caller).
        same_argmax: share of timesteps with the same arg-max, in [0, 1].
        same_text: every crop's greedy text identical.
        texts: ``(text a, text b)`` per crop.
    """

    max_abs_diff: float
    same_argmax: float
    same_text: bool
    texts: list[tuple[str, str]]


def parity(crops: Sequence[np.ndarray], run_a, run_b, reader_a: PPOCRRecognizer,
           reader_b: PPOCRRecognizer) -> Parity:
    """Compare ``run_a``/``run_b`` (``(N,3,48,W)`` -> ``(N,T,C)``) per crop, and the greedy texts of
    ``reader_a``/``reader_b`` (recognisers served the same way) on ``crops`` (BGR uint8)."""
    diffs, agree, frames = 0.0, 0, 0
    for crop in crops:
        batch = make_batch([crop], [resized_width(*crop.shape[:2])])
        a, b = run_a(batch), run_b(batch)
        diffs = max(diffs, float(np.abs(a - b).max()))
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        frames += a.shape[0] * a.shape[1]
    texts = [(x.text, y.text) for x, y in zip(reader_a.recognize(crops), reader_b.recognize(crops))]
    return Parity(diffs, agree / max(frames, 1), all(x == y for x, y in texts), texts)


def ort_logits_runner(logits_model: onnx.ModelProto):
    """``batch -> logits`` with ONNX Runtime (1 thread) on a prepared logits model."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(logits_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def torch_runner(module: torch.nn.Module, *, softmax: bool = False):
    """``batch -> logits`` (or probabilities) with the torch module, no grad."""
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = module(torch.from_numpy(batch))
            return (torch.softmax(y, dim=-1) if softmax else y).numpy()
    return run

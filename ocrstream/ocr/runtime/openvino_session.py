"""The same ONNX files on OpenVINO's CPU plugin, in reduced precision where the CPU has it.

:class:`OpenVINOSession` compiles an ``.onnx`` file with OpenVINO and answers the part of
``onnxruntime.InferenceSession``'s interface the models use (``run``, ``get_inputs``,
``get_outputs``, ``get_providers``, ``get_modelmeta``), so the detector, the recogniser and the
orientation classifier run on it unchanged. :func:`ocrstream.ocr.runtime.onnx_session.make_session`
picks it (see :func:`resolve_backend`).

Why: on CPUs with AVX-512 BF16 (or AMX) OpenVINO runs these convolutional models in bfloat16 at
about 1.8x the speed of fp32 ONNX Runtime (measured for issue 22 on this class of host, AMD EPYC,
1 thread, PP-OCRv6 small: detector 1536x1088 587 -> 315 ms, recogniser 8x48x320 198 -> 108 ms;
``../shared/README.md``), with outputs that differ by up to 0.02 (detector probabilities) and 0.14
(recogniser); the readings on the dev set move by less than 0.1 point CER (``bench/bench_backends.py``).
fp32 OpenVINO is about as fast as ONNX Runtime and is offered for comparison only.

Settings of the compiled model: ``INFERENCE_PRECISION_HINT`` (``bf16`` or ``f32``),
``INFERENCE_NUM_THREADS`` (the same thread policy as ONNX Runtime's sessions, per stream), ``PERFORMANCE_HINT``
``LATENCY`` with ``streams`` streams: one per model call the caller runs at once (the recogniser's
``concurrent_calls``; with one stream the CPU plugin runs concurrent infer requests one after the other),
``CPU_RUNTIME_CACHE_CAPACITY`` :data:`RUNTIME_CACHE_CAPACITY`. Inputs of any shape are accepted (dynamic
shapes). The CPU plugin's runtime cache keeps the primitives built for every input shape, 5,000 entries
by default, and memory grows with it (measured for issue 24: the recogniser +3-6 MB per new batch shape,
154 -> 1,589 MiB PSS over 400 random shapes and rising; the detector +12 MB per page shape), so it is off.
For the detector the cache makes no measurable difference now: a call of an input shape the process
has not run costs ~10-30 ms more than the same call again, with the cache off or at 64 entries alike
(``bench/bench_det_shapes.py``, 12 dev pages, two quiet ABAB runs, 2026-12-06); the ~35-70 ms per
call measured when the cache was first turned off did not show again. The recogniser, whose calls are
small and of ever new shapes, cost twice ONNX Runtime's fp32 on OpenVINO (0.87-0.93 against 0.36 CPU-s
per dev page; not re-measured): :func:`ocrstream.ocr.runtime.onnx_session.resolve_backend` keeps it on ONNX Runtime
under ``auto``. ``run`` is thread-safe: each calling thread has its own infer request.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Precision = Literal["bf16", "fp32"]
#: Entries of the CPU plugin's per-shape runtime cache (OpenVINO's default 5,000; see the module doc).
RUNTIME_CACHE_CAPACITY = 0
#: OpenVINO's names of the precisions.
_HINTS: dict[str, str] = {"bf16": "bf16", "fp32": "f32"}


@dataclass(frozen=True)
class _Port:
    """What ``InferenceSession.get_inputs()`` items offer: a name and a shape (None: dynamic)."""

    name: str
    shape: list[int | None]


@dataclass(frozen=True)
class _ModelMeta:
    """What ``InferenceSession.get_modelmeta()`` offers that the models read: the ONNX metadata_props."""

    custom_metadata_map: dict[str, str] = field(default_factory=dict)


@functools.cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def openvino_available() -> bool:
    """True when the ``openvino`` package imports (it is a dependency on x86-64 Linux only)."""
    try:
        _core()
    except ImportError:
        return False
    return True


@functools.cache
def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin can compute in bfloat16 natively (AVX-512 BF16 or AMX):
    its ``OPTIMIZATION_CAPABILITIES`` include ``BF16``. False without OpenVINO."""
    if not openvino_available():
        return False
    return "BF16" in list(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO for the CPU, used like an ``onnxruntime.InferenceSession``.

    Args:
        model_path: path of an ``.onnx`` file, or the file's bytes (a model edited in memory).
        precision: ``"bf16"`` (needs :func:`cpu_has_bf16`) or ``"fp32"``.
        threads: inference threads per stream (>= 1); None lets OpenVINO choose (one per core).
        streams: infer requests that run at once (>= 1), each on its own ``threads``.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        ImportError: the ``openvino`` package is not installed.
        ValueError: ``precision`` is not bf16 or fp32, or bf16 on a CPU without it; ``streams < 1``.
    """

    def __init__(self, model_path: str | os.PathLike[str] | bytes, precision: Precision = "bf16",
                 threads: int | None = 1, streams: int = 1) -> None:
        path = Path("<in-memory model>") if isinstance(model_path, bytes) else Path(model_path)
        if not isinstance(model_path, bytes) and not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        if precision not in _HINTS:
            raise ValueError(f"precision must be bf16 or fp32, got {precision!r}")
        if precision == "bf16" and not cpu_has_bf16():
            raise ValueError("bf16 inference needs a CPU with AVX-512 BF16 or AMX (OpenVINO reports no BF16)")
        core = _core()
        model = core.read_model(model_path if isinstance(model_path, bytes) else str(path))
        self.precision, self.path = precision, path
        self._meta = _ModelMeta(_metadata(model))
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": streams, "CPU_RUNTIME_CACHE_CAPACITY": str(RUNTIME_CACHE_CAPACITY)}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads * streams
        self._compiled = core.compile_model(model, "CPU", config)
        self._inputs = [_Port(p.get_any_name(), _dims(p)) for p in self._compiled.inputs]
        self._outputs = [_Port(p.get_any_name(), _dims(p)) for p in self._compiled.outputs]
        self._local = threading.local()

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray],
            run_options: Any = None) -> list[np.ndarray]:
        """Outputs (float32 arrays, copies) of one inference, in model order or as ``output_names``
        asks; ``run_options`` (onnxruntime's) are accepted and ignored."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer({name: np.ascontiguousarray(value) for name, value in input_feed.items()})
        names = [p.name for p in self._outputs]
        wanted = list(output_names) if output_names else names
        return [np.array(request.get_output_tensor(names.index(n)).data, dtype=np.float32) for n in wanted]

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        """The backend as a provider name, e.g. ``["OpenVINO-CPU-bf16"]`` (``stage_info``, status)."""
        return [f"OpenVINO-CPU-{self.precision}"]

    def get_modelmeta(self) -> _ModelMeta:
        return self._meta


def _dims(port: Any) -> list[int | None]:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (e.g. the recogniser's ``character`` table): OpenVINO keeps
    them in the model's runtime info under ``framework``."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    return {str(k): str(getattr(v, "value", v)) for k, v in dict(framework).items()}

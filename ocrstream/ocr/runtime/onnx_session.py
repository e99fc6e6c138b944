"""ONNX Runtime session factory shared by every model of the pipeline.

Policy (one place, so detection, recognition and later models behave alike):

* execution provider: ``CUDAExecutionProvider`` when ``device="cuda"``, or when
  ``device="auto"`` and onnxruntime reports it in ``get_available_providers()``;
  ``CPUExecutionProvider`` otherwise (always appended as fallback);
* thread spinning is disabled for the intra- and inter-op pools: on the shared,
  noisy 2-core hosts spinning threads made inference ~10x slower under load;
* intra-op threads come from the ``threads`` argument, else from the
  ``OCRSTREAM_ORT_THREADS`` environment variable, else :data:`DEFAULT_THREADS` (1): measured
  (issue 13, recogniser on 300 SROIE dev lines, alternating in one run on the shared 2-core
  host) 2 threads cost 14 % more CPU per line than 1 for the same text; the stages run in
  parallel processes, so one thread each still keeps both cores busy under load. The same holds
  for the detector on OpenVINO (issue 22, the thirteenth session): alone, two threads answer a page
  ~40 ms sooner for the same CPU, but with recognize busy on the other core (30 dev pages at once,
  ``bench/bench_e2e.py --before``, two ABBA rounds) the preprocess stage cost 0.293-0.320 CPU-s per
  page on two threads against 0.248-0.256 on one, the whole pipeline 0.91 against 0.84: its second
  thread waits for a core that is taken. A process with cores of its own (a preprocess pod with two
  CPUs) may take ``OCRSTREAM_ORT_THREADS=2``;
* concurrent model calls: a recogniser runs up to ``calls`` batches at once on one session
  (``InferenceSession.run`` is thread-safe; each call runs on its caller's thread with one
  intra-op thread), from ``OCRSTREAM_ORT_CONCURRENT_CALLS``, else :data:`DEFAULT_CONCURRENT_CALLS`
  (2, this machine's cores). Measured (issue 15, ``samples/receipt.png``, 12 lines, in-process
  page, 5 pages after warm-up in each of two alternating runs on the shared 2-core host): 1 call at a time
  0.88-1.07 s wall per page, 2 at once 0.58-0.71 s, the same text and recogniser CPU within
  noise (0.67-0.81 vs 0.71-0.83 CPU-s). Unlike a second intra-op thread it adds no
  synchronisation per operator; under load the stage's other processes take the cores anyway;
* graph optimisation level from ``OCRSTREAM_ORT_GRAPH_OPT`` (``all``, the default, ``extended``,
  ``basic``, ``disable``; bench/bench_e2e.py and issue 13 give the measurements);
* the backend (``OCRSTREAM_INFERENCE``, :func:`resolve_backend`): ``auto`` (the default) runs the
  CPU path on OpenVINO in bfloat16 where the CPU computes it natively (AVX-512 BF16 or AMX:
  :mod:`.openvino_session`: the detector at ~0.75x ONNX Runtime's CPU, readings within 0.1 point CER)
  and on ONNX Runtime in fp32 otherwise, and the recogniser (``shapes_vary``) on ONNX Runtime in int8
  (``onnxruntime-int8``, :mod:`ocrstream.ocr.recognition.int8`); CUDA, when present, is always ONNX
  Runtime's in fp32; ``onnxruntime``, ``onnxruntime-int8``, ``openvino-bf16`` and ``openvino-fp32``
  force one for every model;
* the chosen provider is logged at INFO.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Literal, TypeAlias

import onnxruntime as ort

from ocrstream.ocr.runtime.openvino_session import OpenVINOSession, cpu_has_bf16, openvino_available

__all__ = [
    "CALLS_ENV",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "GRAPH_OPT_ENV",
    "THREADS_ENV",
    "BACKENDS",
    "INFERENCE_ENV",
    "DeviceUnavailableError",
    "Session",
    "chosen_provider",
    "make_session",
    "resolve_backend",
    "resolve_concurrent_calls",
    "resolve_graph_opt",
    "resolve_threads",
]

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
THREADS_ENV = "OCRSTREAM_ORT_THREADS"
DEFAULT_THREADS = 1
CALLS_ENV = "OCRSTREAM_ORT_CONCURRENT_CALLS"
DEFAULT_CONCURRENT_CALLS = 2
GRAPH_OPT_ENV = "OCRSTREAM_ORT_GRAPH_OPT"
INFERENCE_ENV = "OCRSTREAM_INFERENCE"
#: The inference backends :func:`make_session` knows.
BACKENDS = ("auto", "onnxruntime", "onnxruntime-int8", "openvino-bf16", "openvino-fp32")
GRAPH_OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

Device = Literal["auto", "cpu", "cuda"]
#: What :func:`make_session` returns: an ONNX Runtime session or one with its interface on OpenVINO.
Session: TypeAlias = ort.InferenceSession | OpenVINOSession


class DeviceUnavailableError(RuntimeError):
    """``device="cuda"`` was requested but this onnxruntime build has no CUDA provider."""


def _positive(value: int | None, env: str, default: int) -> int:
    """``value`` if given, else the integer in ``$env``, else ``default``.

    Raises:
        ValueError: the value (argument or environment) is not a positive integer.
    """
    if value is None:
        raw = os.environ.get(env, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise ValueError(f"{env}={raw!r} is not an integer") from exc
    if value < 1:
        raise ValueError(f"{env} must be >= 1, got {value}")
    return value


def resolve_threads(threads: int | None, default: int = DEFAULT_THREADS) -> int | None:
    """Intra-op thread count: ``threads`` if given, else ``$OCRSTREAM_ORT_THREADS``, else
    ``default`` (:data:`DEFAULT_THREADS`); ``OCRSTREAM_ORT_THREADS=auto`` gives None (onnxruntime's
    default: one thread per physical core).

    Raises:
        ValueError: the value (argument or environment) is not a positive integer.
    """
    if threads is None and os.environ.get(THREADS_ENV, "").strip() == "auto":
        return None
    return _positive(threads, THREADS_ENV, default)


def resolve_concurrent_calls(calls: int | None) -> int:
    """Model calls a recogniser may run at once: ``calls`` if given, else
    ``$OCRSTREAM_ORT_CONCURRENT_CALLS``, else :data:`DEFAULT_CONCURRENT_CALLS`.

    Raises:
        ValueError: the value (argument or environment) is not a positive integer.
    """
    return _positive(calls, CALLS_ENV, DEFAULT_CONCURRENT_CALLS)


def resolve_graph_opt() -> ort.GraphOptimizationLevel:
    """Graph optimisation level from ``$OCRSTREAM_ORT_GRAPH_OPT`` (default ``all``).

    Raises:
        ValueError: a value that is not one of :data:`GRAPH_OPT_LEVELS`.
    """
    raw = os.environ.get(GRAPH_OPT_ENV, "").strip().lower() or "all"
    if raw not in GRAPH_OPT_LEVELS:
        raise ValueError(f"{GRAPH_OPT_ENV}={raw!r}: expected one of {', '.join(GRAPH_OPT_LEVELS)}")
    return GRAPH_OPT_LEVELS[raw]


#: Distributions that install the module ``onnxruntime`` (CPU and CUDA builds); exactly one belongs in
#: an environment: with both, the module is whichever was installed last.
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def installed_runtimes() -> list[str]:
    """The distributions of :data:`RUNTIME_DISTRIBUTIONS` installed here, e.g. ``["onnxruntime"]``."""
    found = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def runtime_conflict() -> str | None:
    """What to do when both the CPU and the CUDA build of ONNX Runtime are installed, else None."""
    if len(installed_runtimes()) > 1:
        return ("both onnxruntime and onnxruntime-gpu are installed and share the module onnxruntime "
                "(the last one installed wins): keep one, e.g. pip uninstall -y onnxruntime onnxruntime-gpu "
                "&& pip install onnxruntime-gpu")
    return None


def resolve_backend(device: str, backend: str | None = None, *, shapes_vary: bool = False) -> str:
    """The backend a session of ``device`` runs on: ``backend`` if given, else ``$OCRSTREAM_INFERENCE``,
    else ``auto``, which gives ``onnxruntime`` for CUDA (``device="cuda"``, or ``"auto"`` with a CUDA
    provider), ``openvino-bf16`` on a CPU with native bfloat16 and OpenVINO installed, else
    ``onnxruntime``; but for a model whose input shape is new at almost every call (``shapes_vary``:
    the recogniser's batches), which OpenVINO, its per-shape cache off, runs at twice ONNX Runtime's
    CPU (:mod:`.openvino_session`), ``onnxruntime-int8`` on the CPU: ONNX Runtime with the shipped
    recogniser in int8 (:mod:`ocrstream.ocr.recognition.int8`; other models run fp32 on it).

    Raises:
        ValueError: an unknown backend, or OpenVINO asked for ``device="cuda"`` or not installed.
    """
    raw = (backend or os.environ.get(INFERENCE_ENV, "").strip().lower() or "auto")
    if raw not in BACKENDS:
        raise ValueError(f"{INFERENCE_ENV}={raw!r}: expected one of {', '.join(BACKENDS)}")
    cuda = device == "cuda" or (device == "auto" and CUDA_PROVIDER in ort.get_available_providers())
    if raw == "auto":
        if cuda:
            return "onnxruntime"
        if shapes_vary:
            return "onnxruntime-int8"
        return "openvino-bf16" if cpu_has_bf16() else "onnxruntime"
    if raw.startswith("openvino") and (device == "cuda" or not openvino_available()):
        raise ValueError(f"{INFERENCE_ENV}={raw} runs on the CPU with the openvino package "
                         f"(device={device!r}, openvino {'installed' if openvino_available() else 'missing'})")
    return raw


def _providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_PROVIDER]
    if device == "cuda":
        if CUDA_PROVIDER not in available:
            raise DeviceUnavailableError(
                f"device='cuda' requested but {CUDA_PROVIDER} is not available "
                f"(onnxruntime {ort.__version__} offers {available}); "
                "install onnxruntime-gpu matching your CUDA/cuDNN (in place of onnxruntime) or use device='cpu'"
                + (f"; {runtime_conflict()}" if runtime_conflict() else "")
            )
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "auto":
        return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in available else [CPU_PROVIDER]
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def _session_options(threads: int | None, mem_pattern: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.enable_mem_pattern = mem_pattern
    opts.graph_optimization_level = resolve_graph_opt()
    opts.log_severity_level = 3  # errors only; ORT warnings about unused initialisers are noise
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1  # sequential executor: the graphs are chains of convs
    if threads is not None:
        opts.intra_op_num_threads = threads
    return opts


def make_session(
    model_path: str | os.PathLike[str] | bytes,
    *,
    device: Device = "auto",
    threads: int | None = None,
    backend: str | None = None,
    calls: int = 1,
    mem_pattern: bool = True,
) -> Session:
    """A session for ``model_path`` with the project's backend, provider and thread policy.

    Args:
        model_path: path of an ``.onnx`` file, or its bytes (a model edited in memory).
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (>= 1); None reads ``$OCRSTREAM_ORT_THREADS``
            (unset: :data:`DEFAULT_THREADS`; ``auto``: onnxruntime's default).
        backend: one of :data:`BACKENDS`; None reads ``$OCRSTREAM_INFERENCE`` (:func:`resolve_backend`).
        calls: model calls the caller runs at once (OpenVINO: as many streams; an ONNX Runtime
            session runs concurrent calls as they come).
        mem_pattern: ONNX Runtime's memory patterns (``enable_mem_pattern``: a shape's allocations
            planned on its first run, one block from the second, the plan kept per input shape);
            False for a model whose input shape is new at almost every call (the recogniser: the
            plans are rarely reused and one is kept for every shape; issue 24).

    Returns:
        An ``onnxruntime.InferenceSession``, or an :class:`OpenVINOSession` with the same ``run``.

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        DeviceUnavailableError: ``device="cuda"`` but no CUDA provider is available.
        ValueError: bad ``device``, thread count or backend.
    """
    path = Path("<in-memory model>") if isinstance(model_path, bytes) else Path(model_path)
    if not isinstance(model_path, bytes) and not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    providers = _providers_for(device)
    chosen = resolve_backend(device, backend)
    n_threads = resolve_threads(threads)
    if chosen.startswith("openvino"):
        precision: Literal["bf16", "fp32"] = "bf16" if chosen == "openvino-bf16" else "fp32"
        ov_session = OpenVINOSession(model_path if isinstance(model_path, bytes) else path, precision, n_threads,
                                     streams=calls)
        log.info("openvino session %s: %s threads=%s", path.name, chosen_provider(ov_session),
                 n_threads if n_threads is not None else "default")
        return ov_session
    session = ort.InferenceSession(
        model_path if isinstance(model_path, bytes) else str(path), sess_options=_session_options(n_threads, mem_pattern),
        providers=providers
    )
    if device == "cuda" and chosen_provider(session) != CUDA_PROVIDER:
        # ORT silently falls back to CPU when the CUDA libraries fail to load.
        raise DeviceUnavailableError(
            f"device='cuda' requested but the session for {path.name} runs on "
            f"{chosen_provider(session)} (CUDA/cuDNN libraries missing?)"
        )
    log.info(
        "onnx session %s: provider=%s intra_op_threads=%s (device=%s)",
        path.name,
        chosen_provider(session),
        n_threads if n_threads is not None else "default",
        device,
    )
    return session


def chosen_provider(session: Session) -> str:
    """Name of the execution provider the session actually runs on (its first provider)."""
    return str(session.get_providers()[0])

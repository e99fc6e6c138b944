"""The isolated decoder: untrusted bytes are decoded, cleaned, detected and cropped in a worker process.

A decompression bomb, a decoder bug or a page that takes forever must cost one document, never
the preprocess stage. So the stage process never decodes: it hands the document (as a temporary
file) to a :class:`DecoderPool` of worker processes (``pebble.ProcessPool``; workers forked
from a forkserver, never from the asyncio process, see :func:`_context`) and gets back compact
results.

Each worker:

* limits its own address space (``RLIMIT_AS`` = ``decode_memory_bytes``) before loading anything:
  an allocation over it fails inside the worker (``MemoryError``, OpenCV's ``Insufficient
  memory``), which becomes :class:`DecoderCrashedError` for that document. Measured with ONNX
  Runtime and the DBNet model loaded (``bench/bench_preprocess_memory.py``): ~0.65 GB of address
  space and ~180 MiB resident idle; an 80 Mpx page (the per-page budget) peaks at ~0.72 GiB
  resident and stays under 2 GiB of address space, so the default 2 GiB passes every page the
  budget admits (a PDF page holding a 400 Mpx image too: PDFium renders it at ~0.5 GiB).
  ``RLIMIT_AS`` rather than ``RLIMIT_DATA``: both over-count resident memory, but only the
  address-space limit also covers memory-mapped allocations of every library;
* caps glibc's malloc arenas at ``WorkerConfig.malloc_arenas`` (2) before any thread starts: each
  arena reserves 64 MiB of address space, which ``RLIMIT_AS`` counts
  (:func:`ocrstream.ocr.runtime.heap.limit_arenas`);
* loads the DBNet detector once (pool initializer);
* runs one task per call: :func:`_inspect` (open the document, check the whole budget from
  headers, return every page's size) and :func:`_analyse_page` (decode one page, clean, detect,
  crop: :mod:`.regions`, and pack the page's crops into one object: :mod:`ocrstream.storage.crops`),
  each with ``decode_timeout_s`` of wall time, after which pebble kills the worker (-> :class:`DecoderCrashedError`);
* is replaced after ``decode_worker_max_tasks`` tasks (heap fragmentation does not stay), and
  returns freed heap to the OS after every task (glibc ``malloc_trim``). It keeps glibc's dynamic
  mmap threshold, unlike the stage processes (``OCRSTREAM_HEAP_MMAP_THRESHOLD_BYTES``): fixed at
  1 MiB, every page-sized intermediate image is a fresh mapping whose pages fault in, and clean-up
  plus detection cost 242-255 instead of 201-205 CPU-ms per page (``bench/bench_pages.py --limit 30
  --threads 1``, ABBA in one run, issue 24), for memory the replacement returns anyway.

A worker that dies (kernel OOM killer, a segfault in a codec) fails only the task it ran
(:class:`DecoderCrashedError`); pebble starts a new worker and the next document decodes normally.
A pool that pebble itself gave up on is replaced at the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import resource
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pebble

from ocrstream.errors import ConfigurationError, DecoderCrashedError, OcrStreamError
from ocrstream.ocr.decode import Budget, OpenedDocument, open_document
from ocrstream.ocr.runtime import heap
from ocrstream.ocr.runtime.opencv_threads import limit_opencv_threads
from ocrstream.ocr.templates import Template

if TYPE_CHECKING:
    from ocrstream.ocr.runtime.onnx_session import Device
    from ocrstream.storage.crops import Codec

__all__ = ["DecoderPool", "IsolatedDocument", "PageResult", "WorkerConfig"]

log = logging.getLogger(__name__)

#: words of the out-of-memory errors of OpenCV (StsNoMem), ONNX Runtime (std::bad_alloc,
#: BFCArena "Failed to allocate memory") and PDFium/pypdfium2 (bitmap creation).
_OOM_WORDS = ("insufficient memory", "bad_alloc", "failed to allocate", "out of memory",
              "cannot allocate memory", "failed to create bitmap")


@dataclass(frozen=True)
class WorkerConfig:
    """What a decoder worker needs (picklable; sent once to each spawned worker).

    Attributes:
        budget: the document budget (pages, pixels).
        memory_bytes: the worker's address-space limit (``RLIMIT_AS``), bytes; 0 = none.
        cleanup_steps: page clean-up before detection (:func:`ocrstream.ocr.cleanup.apply`).
        detect_max_side: DBNet input long side, px.
        detect_glyph_px, detect_min_side: per-page DBNet input size (``LineDetector``'s ``glyph_px``, ``min_side``).
        device: ONNX Runtime device (``auto``, ``cpu``, ``cuda``).
        load_detector: False for a pool that only serves template documents (tests, tools).
        crop_codec: codec of a page's crop pack (:func:`ocrstream.storage.crops.pack_crops`).
        max_page_crop_bytes: pixel bytes of one page's crops (more: DocumentTooLargeError).
        pdf_text: PDF text layers (``auto``, ``ocr``, ``text``; :mod:`ocrstream.ocr.pdftext`).
        pdf_max_page_chars: the most characters of one page's text layer read.
        malloc_arenas: glibc malloc arenas the worker may have
            (:func:`ocrstream.ocr.runtime.heap.limit_arenas`);
            0 = glibc's default (8 per core, 64 MiB of address space each).
        opencv_threads: OpenCV's threads in the worker (:mod:`ocrstream.ocr.runtime.opencv_threads`;
            0 = OpenCV's default, one per core).
    """

    budget: Budget = field(default_factory=Budget)
    memory_bytes: int = 2 * 1024**3
    cleanup_steps: str = "border,orientation"
    detect_max_side: int = 1536
    device: Device = "auto"
    detect_glyph_px: float = 12.0
    detect_min_side: int = 640
    load_detector: bool = True
    crop_codec: Codec = "none"
    max_page_crop_bytes: int = 128 * 1024**2
    pdf_text: str = "auto"
    pdf_max_page_chars: int = 100_000
    malloc_arenas: int = 2
    opencv_threads: int = 1


@dataclass(frozen=True)
class PageResult:
    """One analysed page, as it crosses back from the worker.

    Attributes:
        width, height: the decoded page's size, px.
        regions: per region, its event fields (``line_index``, ``order``, ``box``, ``quad``,
            and ``field`` or ``detection_score``; page px) and where its crop lies in ``crops``:
            ``crop_offset`` (bytes into the unpacked payload) and ``crop_shape`` (``[h, w]``).
        crops: the page's crop pack, one object (:func:`ocrstream.storage.crops.pack_crops`); empty
            for a page read from its PDF text layer.
        text_source: ``"pdf-text"`` (regions carry ``text``, ``words``, ``source``: nothing to
            recognise, no crops) or ``"ocr"``.
        phases: the page's timed steps in the worker, ``(name, start_ns, end_ns)`` (``time.time_ns()``):
            ``decode``, ``cleanup``, ``detection``, ``crop`` (trace spans: ocrstream/streaming/tracing.py).
        cpu_s: the worker process's CPU seconds for the page (``time.process_time``, all its threads):
            the decoder's share of the document's cost (ocrstream/streaming/costs.py).
        ink: fraction in [0, 1] of the cleaned page that is ink (:func:`ocrstream.ocr.cleanup.ink_fraction`);
            None for template and PDF-text pages.
    """

    width: int
    height: int
    regions: list[dict]
    crops: bytes
    text_source: Literal["pdf-text", "ocr"] = "ocr"
    phases: list[tuple[str, int, int]] = field(default_factory=list)
    cpu_s: float = 0.0
    ink: float | None = None


# ----------------------------------------------------------------------------------------------
# Worker side (runs in the decoder process)
# ----------------------------------------------------------------------------------------------
class _WorkerState:
    config: WorkerConfig | None = None
    detector: Any = None
    error: str | None = None  # why initialisation failed; every task then reports it
    token: str | None = None  # the document currently open (a token per document), and its handle
    document: OpenedDocument | None = None


_state = _WorkerState()


def _config() -> WorkerConfig:
    """The pool's config (the initializer sets it before any task runs)."""
    assert _state.config is not None
    return _state.config


def _initialise(config: WorkerConfig) -> None:
    """Pool initializer: malloc arenas capped (:func:`~ocrstream.ocr.runtime.heap.limit_arenas`),
    memory limit, then the detector. Never raises (pebble would respawn the worker for ever); a failure is kept and raised
    by every task instead."""
    _state.config = config
    try:
        if config.malloc_arenas > 0:
            # measured on 6 SROIE pages and an 8-page PDF (bench/bench_preprocess_memory.py's address
            # space column): peak address space 1863 -> 1470 MiB with 2 arenas (7 threads), idle
            # 1046 -> 799 MiB; issue 24's soak lost one page to the 2 GiB limit without it
            heap.limit_arenas(config.malloc_arenas)
        if config.memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (config.memory_bytes, config.memory_bytes))
        limit_opencv_threads(config.opencv_threads)
        if config.load_detector:
            from ocrstream.ocr.detection import LineDetector

            _state.detector = LineDetector(max_side=config.detect_max_side, glyph_px=config.detect_glyph_px,
                                           min_side=config.detect_min_side, device=config.device)
    except BaseException as exc:  # noqa: BLE001 - reported by the first task
        _state.error = f"{type(exc).__name__}: {exc}"


def _ready() -> int:
    """Task: the worker's pid once it is initialised; raises ConfigurationError if it is not."""
    if _state.error:
        raise ConfigurationError(f"the decoder worker could not start: {_state.error}")
    return os.getpid()


def _document(path: str, token: str) -> OpenedDocument:
    """The document at ``path``, kept open between the page tasks of one document (``token``
    tells documents apart: a temporary file's name may come again)."""
    if _state.token != token:
        _forget()
        _state.document = open_document(Path(path).read_bytes(), _config().budget)
        _state.token = token
    assert _state.document is not None  # opened above for this token
    return _state.document


def _forget() -> None:
    if _state.document is not None:
        _state.document.close()
    _state.token = _state.document = None


def _inspect(path: str, token: str) -> tuple[str, list[tuple[int, int]]]:
    """Task: open the document and check the whole budget from its headers -> (kind, page sizes)."""
    _ready()
    with _worker_errors("opening the document"):
        document = _document(path, token)
        return document.kind, document.page_sizes


def _analyse_page(path: str, token: str, index: int, template: Template | None) -> PageResult:
    """Task: :func:`_page_result` with the worker's CPU seconds for it (``cpu_s``)."""
    cpu0 = time.process_time()
    result = _page_result(path, token, index, template)
    return dataclasses.replace(result, cpu_s=time.process_time() - cpu0)


def _page_result(path: str, token: str, index: int, template: Template | None) -> PageResult:
    """Page ``index`` -> PageResult: read from its PDF text layer when
    :func:`ocrstream.ocr.pdftext.decide` says so (no rendering), else decoded and cut into
    regions (template, else detection)."""
    from ocrstream.ocr import pdftext
    from ocrstream.ocr.regions import cut_regions
    from ocrstream.storage.crops import pack_crops

    _ready()
    config = _config()
    with _worker_errors(f"decoding page {index + 1}"):
        start = time.time_ns()
        document = _document(path, token)
        if template is None and config.pdf_text != "ocr" and document.kind == "pdf":
            layer = document.text_layer(index, config.pdf_max_page_chars)
            if pdftext.decide(layer, config.pdf_text)[0] == "pdf-text" and layer is not None:
                width, height = document.page_sizes[index]
                return PageResult(width, height, pdftext.layer_regions(layer, index), b"", "pdf-text",
                                  [("decode", start, time.time_ns())])
        page = document.page(index)
        phases = [("decode", start, time.time_ns())]
        measures: dict[str, float] = {}
        regions = cut_regions(page, index, template, _state.detector, config.cleanup_steps, phases, measures)
        pack, spans = pack_crops([crop for _, crop in regions], codec=config.crop_codec,
                                 max_bytes=config.max_page_crop_bytes)
        fields = [{**region, "crop_offset": offset, "crop_shape": list(shape), "source": "ocr"}
                  for (region, _), (offset, shape) in zip(regions, spans)]
        return PageResult(int(page.shape[1]), int(page.shape[0]), fields, pack, phases=phases,
                          ink=measures.get("ink"))


@contextlib.contextmanager
def _worker_errors(what: str):
    """Out-of-memory failures of any library as DecoderCrashedError; heap trimmed afterwards."""
    try:
        yield
    except OcrStreamError:
        _forget()
        raise
    except BaseException as exc:
        _forget()
        if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in _OOM_WORDS):
            limit = _config().memory_bytes
            raise DecoderCrashedError(
                f"the decoder ran out of memory while {what} (limit {limit} bytes, "
                f"OCRSTREAM_DECODE_MEMORY_BYTES): {type(exc).__name__}: {str(exc)[:200]}") from None
        raise
    finally:
        heap.trim()


# ----------------------------------------------------------------------------------------------
# Stage side
# ----------------------------------------------------------------------------------------------
class IsolatedDocument:
    """A document opened by a decoder worker: its kind and page sizes, its pages on request.

    Attributes:
        kind: the sniffed format.
        page_sizes: ``(width, height)`` px per page from the headers (within the budget).
    """

    def __init__(self, pool: DecoderPool, path: str, token: str, kind: str, page_sizes: list[tuple[int, int]]):
        self._pool, self._path, self._token = pool, path, token
        self.kind, self.page_sizes = kind, page_sizes

    async def page(self, index: int, template: Template | None = None) -> PageResult:
        """Decode page ``index`` and cut its regions in a worker (errors: :meth:`DecoderPool.run`)."""
        return await self._pool.run(f"decoding page {index + 1}", _analyse_page, self._path, self._token, index,
                                    template)


class DecoderPool:
    """Worker processes that decode untrusted documents (see the module docstring).

    Args:
        config: what each worker loads and its limits.
        timeout_s: wall time of one task (opening a document, or one page), seconds.
        workers: worker processes (one is enough for a stage that handles one record at a time).
        max_tasks: tasks after which a worker is replaced (0 = never).
        tmp_dir: where documents are written for the workers (None: the system's temp dir).
    """

    def __init__(self, config: WorkerConfig, *, timeout_s: float = 60.0, workers: int = 1,
                 max_tasks: int = 100, tmp_dir: str | None = None):
        self.config, self.timeout_s = config, timeout_s
        self.workers, self.max_tasks, self.tmp_dir = workers, max_tasks, tmp_dir
        self._pool: pebble.ProcessPool | None = None

    @classmethod
    def from_settings(cls, settings, **overrides: Any) -> DecoderPool:
        """A pool configured by :class:`ocrstream.settings.Settings` (``OCRSTREAM_DECODE_*``)."""
        config = WorkerConfig(Budget.from_settings(settings), settings.decode_memory_bytes,
                              settings.cleanup_steps, settings.detect_max_side, settings.device,
                              detect_glyph_px=settings.detect_glyph_px, detect_min_side=settings.detect_min_side,
                              crop_codec=settings.crop_codec, max_page_crop_bytes=settings.max_page_crop_bytes,
                              pdf_text=settings.pdf_text, pdf_max_page_chars=settings.pdf_max_page_chars,
                              opencv_threads=settings.opencv_threads)
        options = dict(timeout_s=settings.decode_timeout_s, workers=settings.decode_workers,
                       max_tasks=settings.decode_worker_max_tasks)
        return cls(config, **{**options, **overrides})

    def _ensure_pool(self) -> pebble.ProcessPool:
        if self._pool is not None and not self._pool.active:  # pebble gave up (a worker died idle)
            log.warning("decoder pool broken; starting a new one")
            self._stop_pool()
        if self._pool is None:
            self._pool = pebble.ProcessPool(
                max_workers=self.workers, max_tasks=self.max_tasks, initializer=_initialise,
                initargs=(self.config,), context=_context())
        return self._pool

    async def start(self, timeout_s: float = 300.0) -> None:
        """Start the workers and wait until one is ready (model loaded).

        Raises:
            ConfigurationError: a worker could not initialise (e.g. the model does not load), or
                did not within ``timeout_s``.
        """
        try:
            pid = await self.run("starting", _ready, timeout_s=timeout_s)
        except DecoderCrashedError as exc:
            raise ConfigurationError(f"the decoder worker did not start: {exc}") from None
        log.info("decoder worker %s ready (memory limit %d bytes, timeout %g s per page)",
                 pid, self.config.memory_bytes, self.timeout_s)

    async def run(self, what: str, function: Callable, *args: Any, timeout_s: float | None = None) -> Any:
        """Run ``function(*args)`` in a worker; ``what`` names the work in error messages.

        Raises:
            DecoderCrashedError: the worker died (signal, OOM kill), ran out of memory, or took
                longer than the timeout (it is then killed).
            Whatever typed error the task raised (TruncatedImageError, ...).
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        future = self._ensure_pool().schedule(function, args=args, timeout=timeout)
        try:
            return await asyncio.wrap_future(future)  # cancelling the caller cancels (kills) the task
        except TimeoutError:
            raise DecoderCrashedError(
                f"{what} took longer than {timeout:g} s (OCRSTREAM_DECODE_TIMEOUT_S); the decoder "
                "process was stopped") from None
        except MemoryError as exc:  # raised by a task outside _worker_errors
            raise DecoderCrashedError(f"the decoder ran out of memory while {what} (limit "
                                      f"{self.config.memory_bytes} bytes, OCRSTREAM_DECODE_MEMORY_BYTES): {exc}") from None
        except BrokenProcessPool as exc:  # pebble gave up on the pool; replaced at the next call
            raise DecoderCrashedError(f"the decoder pool broke while {what}: {exc}") from None
        except pebble.ProcessExpired as exc:
            raise DecoderCrashedError(
                f"the decoder process died while {what} ({_exit_reason(exc.exitcode)}; its memory limit "
                f"is {self.config.memory_bytes} bytes)") from None

    @contextlib.asynccontextmanager
    async def open(self, data: bytes) -> AsyncIterator[IsolatedDocument]:
        """Hand ``data`` to a worker and check its budget there; yields the opened document.

        The bytes go through a private temporary file (mode 0600), removed on exit.

        Raises:
            The typed errors of :func:`ocrstream.ocr.decode.open_document`, and
            DecoderCrashedError.
        """
        path = await asyncio.to_thread(self._write, data)
        del data  # the worker reads the file; this frame lives as long as the document is open
        try:
            token = uuid.uuid4().hex
            kind, sizes = await self.run("opening the document", _inspect, path, token)
            yield IsolatedDocument(self, path, token, kind, sizes)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _write(self, data: bytes) -> str:
        fd, path = tempfile.mkstemp(prefix="ocrstream-doc-", dir=self.tmp_dir)  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def close(self) -> None:
        """Stop the workers (a running task is killed)."""
        self._stop_pool()

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join(timeout=10)
            self._pool = None


def _context() -> multiprocessing.context.BaseContext:
    """Workers are forked from a forkserver: a clean single-threaded process started once (never a
    fork of the asyncio stage process and its threads) that has imported the decoders and ONNX
    Runtime already, so replacing a dead or recycled worker costs only the model load."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["services.preprocess.worker", "ocrstream.ocr.regions"])
    return context


def _exit_reason(exitcode: int | None) -> str:
    """``-9`` -> "killed by SIGKILL, e.g. the kernel's out-of-memory killer", ``1`` -> "exit code 1"."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", e.g. by the kernel's out-of-memory killer" if -exitcode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {exitcode}"

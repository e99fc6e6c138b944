"""Peak memory and time of preprocess's isolated decoding on hostile documents (issue 8 target:
the stage process plus its decoder <= 1.5 GiB).

Every input is generated here (no data needed): pixel bombs within and over the budget, a
60-page PDF of 80 Mpx pages, a 100-page A4 PDF, a PDF page holding a 400 Mpx image, a 1000-frame
TIFF, a JPEG whose header lies, then an ordinary receipt (the pool must still work). Each
document goes through :class:`services.preprocess.worker.DecoderPool` exactly as
``PreprocessStage.handle`` drives it (open -> budget from headers -> page by page; region dicts
kept, PNG crops dropped as after their upload), with the production settings (``Settings()``:
``decode_memory_bytes``, ``decode_timeout_s``, recycling).

Memory: VmHWM (peak resident set) from ``/proc/<pid>/status`` of this process (it plays the
stage process), of the forkserver and of every decoder worker, reset before each document
(``/proc/<pid>/clear_refs``) and polled every 20 ms (a worker's peak is read while it lives).
``total`` adds the three peaks: an upper bound of their simultaneous peak.

    OMP_WAIT_POLICY=PASSIVE nice .venv/bin/python bench/bench_preprocess_memory.py [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from ocrstream.settings import Settings  # noqa: E402
from services.preprocess.worker import DecoderPool  # noqa: E402
from tools.render_samples import RECEIPT, encode, render_page  # noqa: E402

MIB = 2**20
SROIE = REPO.parent / "shared" / "data" / "sroie-dev"


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _pdf(pages: list[Image.Image], resolution: float) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", resolution=resolution, save_all=True, append_images=pages[1:])
    return buf.getvalue()


def _jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    return buf.getvalue()


def _tiff_frames(n: int) -> bytes:
    frame = Image.new("1", (8, 8), 1)
    buf = io.BytesIO()
    frame.save(buf, "TIFF", save_all=True, append_images=[frame] * (n - 1))
    return buf.getvalue()


def _lying_jpeg() -> bytes:
    data = bytearray(_jpeg(Image.new("L", (16, 16), 128)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (11000).to_bytes(2, "big") + (10000).to_bytes(2, "big")
    return bytes(data)


def inputs() -> dict[str, Callable[[], bytes]]:
    """name -> maker of each hostile (and one ordinary) document."""
    a4_text = lambda: render_page(RECEIPT * 3, size=28, width=1654)  # noqa: E731 - 200 dpi A4 width
    return {
        "png-79mpx-1bit (bomb within budget)": lambda: _png(Image.new("1", (9000, 8800), 1)),
        "png-900mpx-1bit (bomb over budget)": lambda: _png(Image.new("1", (30_000, 30_000), 1)),
        "jpeg-80mpx-white": lambda: _jpeg(Image.new("L", (8000, 10_000), 255), quality=75),
        "jpeg-lying-header-10000x11000": _lying_jpeg,
        "tiff-1000-frames": lambda: _tiff_frames(1000),
        "pdf-60-pages-of-80mpx (3 KB/page)": lambda: _pdf([Image.new("1", (400, 500), 1)] * 60, resolution=10),
        "pdf-100-a4-pages-with-text": lambda: _pdf([a4_text()] * 100, resolution=200),
        "pdf-1-page-holding-a-400mpx-image": lambda: _pdf([Image.new("1", (20_000, 20_000), 1)], resolution=2418),
        "receipt-png (ordinary, after the rest)": lambda: encode(render_page(RECEIPT, size=28), "PNG"),
        **({"pdf-8-sroie-pages (ordinary scans, ../shared)": _sroie_pdf} if SROIE.is_dir() else {}),
    }


def _sroie_pdf() -> bytes:
    """An 8-page PDF of the first 8 SROIE dev scans at 200 dpi (real receipts, the soak's kind)."""
    pages = sorted((SROIE / "pages" / "img").glob("*.jpg"))[:8]
    return _pdf([Image.open(p).convert("RGB") for p in pages], resolution=200)


# -- memory probes ---------------------------------------------------------------------------------
def _status(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: int(v.split()[0]) * 1024 for k, _, v in (line.partition(":") for line in f)
                    if k in ("VmHWM", "VmRSS", "VmSize", "VmPeak")}
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return {}


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return kids


def _reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        pass


class Peaks:
    """Polls VmHWM of this process, the forkserver (our child) and the workers (its children)."""

    def __init__(self) -> None:
        self.stage = self.forkserver = self.worker = 0
        self.worker_vm = 0  # the worker's peak address space (what RLIMIT_AS bounds), polled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> Peaks:
        me = os.getpid()
        for pid in [me, *_children(me), *(w for c in _children(me) for w in _children(c))]:
            _reset_peak(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        self.stage = max(self.stage, _status(me).get("VmHWM", 0))
        for server in _children(me):
            self.forkserver = max(self.forkserver, _status(server).get("VmHWM", 0))
            for worker in _children(server):
                status = _status(worker)
                self.worker = max(self.worker, status.get("VmHWM", 0))
                self.worker_vm = max(self.worker_vm, status.get("VmSize", 0))

    @property
    def total(self) -> int:
        return self.stage + self.forkserver + self.worker


async def process(pool: DecoderPool, data: bytes) -> str:
    """What PreprocessStage.handle does with a document, minus the uploads; returns the outcome."""
    try:
        async with pool.open(data) as document:
            del data
            regions = 0
            for index in range(len(document.page_sizes)):
                page = await document.page(index, None)
                regions += len(page.regions)
                del page  # the stage drops the PNGs once uploaded
        return f"done: {len(document.page_sizes)} pages, {regions} regions"
    except Exception as exc:  # noqa: BLE001 - the outcome is what we print
        return f"{type(exc).__name__}: {str(exc)[:90]}"


def made(name: str) -> bytes:
    """The bytes of input ``name``, made in a child process so that making them (Pillow holds a
    900 Mpx bitmap for a moment) does not count in this process's memory."""
    return subprocess.run([sys.executable, __file__, "--make", name], capture_output=True, check=True).stdout


async def main(only: str | None, arenas: list[int]) -> int:
    settings = Settings()
    makers = {k: v for k, v in inputs().items() if not only or only in k}
    print(f"settings: decode_memory_bytes={settings.decode_memory_bytes} decode_timeout_s={settings.decode_timeout_s} "
          f"max_image_pixels={settings.max_image_pixels} max_document_pixels={settings.max_document_pixels} "
          f"max_pages={settings.max_pages} pdf_dpi={settings.pdf_dpi} worker max_tasks={settings.decode_worker_max_tasks}")
    print("| malloc arenas | input | bytes | outcome | s | stage MiB | forkserver MiB | worker MiB | total MiB "
          "| worker address space MiB (RLIMIT_AS) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0
    for arena in arenas:
        pool = DecoderPool.from_settings(settings)
        pool.config = dataclasses.replace(pool.config, malloc_arenas=arena)
        await pool.start()
        try:
            worst = max(worst, await _run_all(pool, makers, "glibc default" if arena == 0 else str(arena)))
        finally:
            pool.close()
    print(f"\nworst total peak: {worst / MIB:.0f} MiB (target <= 1536 MiB)")
    return 0


async def _run_all(pool: DecoderPool, makers: dict[str, Callable[[], bytes]], label: str) -> int:
    """Every input through ``pool``, a row each; the worst total peak."""
    worst = 0
    for name in makers:
        data = made(name)
        with Peaks() as peaks:
            start = time.perf_counter()
            outcome = await process(pool, data)
            seconds = time.perf_counter() - start
        worst = max(worst, peaks.total)
        print(f"| {label} | {name} | {len(data)} | {outcome} | {seconds:.1f} | {peaks.stage / MIB:.0f} | "
              f"{peaks.forkserver / MIB:.0f} | {peaks.worker / MIB:.0f} | {peaks.total / MIB:.0f} "
              f"| {peaks.worker_vm / MIB:.0f} |", flush=True)
    return worst


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the inputs whose name contains this")
    parser.add_argument("--malloc-arenas", default="2",
                        help="comma-separated WorkerConfig.malloc_arenas values, a pool each (0 = glibc's default)")
    parser.add_argument("--make", help=argparse.SUPPRESS)  # internal: write one input to stdout
    args = parser.parse_args()
    if args.make:
        sys.stdout.buffer.write(inputs()[args.make]())
        sys.exit(0)
    sys.exit(asyncio.run(main(args.only, [int(a) for a in args.malloc_arenas.split(",")])))

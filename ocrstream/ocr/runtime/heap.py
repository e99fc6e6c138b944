"""glibc heap controls for long-running processes: give freed heap back, fix the mmap threshold,
cap malloc arenas.

Issue 24's soak (``bench/bench_rec_memory.py``, ``bench/soak.py``): the memory a stage keeps
after its model arenas are warm grows in glibc's heaps, not in ONNX Runtime's arena. glibc gives
each thread that allocates an arena of its own (up to 8 per core) and returns a heap's free
pages to the OS only when they sit at its top; pages freed in the middle stay resident until
``malloc_trim`` releases them (glibc >= 2.8 walks every arena and ``madvise``\\ s free pages
away; ``man 3 malloc_trim``), but never the free top of a thread's heap: that is what a fixed
mmap threshold keeps small (:func:`fix_mmap_threshold`). Every function is a no-op where glibc is
not the C library.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

#: glibc ``mallopt`` parameter numbers (``malloc.h``).
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where it cannot be loaded (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc has both
    except (OSError, AttributeError):
        return None
    return libc


def trim() -> bool:
    """Give every arena's free heap pages back to the OS (glibc ``malloc_trim(0)``).

    Costs a walk over the free chunks of every arena: ~0.1-1 ms for a stage's heaps, so call it
    after a unit of work (a batch, a task), not per allocation. Returns True when memory was
    released, False when none could be or glibc is absent. Never raises."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def fix_mmap_threshold(size: int) -> bool:
    """Serve every allocation of ``size`` bytes or more with its own ``mmap`` (returned to the OS
    when freed) and stop glibc raising that threshold by itself (``mallopt(M_MMAP_THRESHOLD)``).

    By default glibc starts at 128 KiB and, each time a mapped block is freed, raises the
    threshold to that block's size (up to 32 MiB), so large short-lived buffers (a page's crop pack,
    a recogniser batch of a few MiB) are then carved out of the heaps of the threads that allocate
    them, where the small blocks allocated among them pin their pages. True where it took effect
    (glibc); False elsewhere. Never raises."""
    return _mallopt(M_MMAP_THRESHOLD, size)


def limit_arenas(arenas: int) -> bool:
    """Cap the process's glibc malloc arenas at ``arenas`` (``mallopt(M_ARENA_MAX)``, as
    ``MALLOC_ARENA_MAX`` would). Applies to arenas made after the call: call it before threads
    start. Each arena reserves 64 MiB of address space, which ``RLIMIT_AS`` counts though
    little of it is touched. True where it took effect (glibc); False elsewhere. Never raises."""
    return _mallopt(M_ARENA_MAX, arenas)


def _mallopt(parameter: int, value: int) -> bool:
    """glibc ``mallopt(parameter, value)``: True where it took effect; False elsewhere."""
    libc = _libc()
    if libc is None:
        return False
    with contextlib.suppress(OSError):
        return bool(libc.mallopt(parameter, value))
    return False

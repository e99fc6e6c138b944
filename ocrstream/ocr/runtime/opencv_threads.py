"""OpenCV's thread pool in the processes that run OCR.

OpenCV parallelises many of its functions (resizing, colour conversion, thresholds, connected
components) over one thread per core by default. In ocrstream the model calls already use the
cores (the recogniser runs two batches at once, the detector two OpenVINO threads) and under load
every stage process has work of its own, so OpenCV's extra threads mostly add synchronisation.
Measured for issue 22 (2-vCPU AMD EPYC, ``OCRPipeline`` on the 60 SROIE dev pages, one run,
1/2/2/1 threads): 1 thread 0.706/0.703 CPU-s and 0.424/0.422 s wall per page, OpenCV's default
(2) 0.758/0.726 CPU-s and 0.426/0.411 s: 5 % less CPU for the same wall time and the same text on
every page; the clean-up alone 45.5 against 51 CPU-ms per page (45.5 against 34 ms wall).
``OCRSTREAM_OPENCV_THREADS`` (:class:`ocrstream.settings.Settings`, default 1) is applied by the
recognize stage, the preprocess stage's decoder workers and ``OCRPipeline.from_settings``: the
processes that run OpenCV.
"""

from __future__ import annotations

import cv2

__all__ = ["limit_opencv_threads"]


def limit_opencv_threads(threads: int) -> None:
    """Run OpenCV's parallel functions on ``threads`` threads in this process (``cv2.setNumThreads``);
    0 restores OpenCV's default (one per core).

    Raises:
        ValueError: ``threads < 0``.
    """
    if threads < 0:
        raise ValueError(f"OpenCV threads must be >= 0 (0 = OpenCV's default), got {threads}")
    cv2.setNumThreads(threads if threads > 0 else -1)  # OpenCV: a negative count resets to its default

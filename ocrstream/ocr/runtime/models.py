"""Where the shipped ONNX models are: the PP-OCR files inside the installed ``rapidocr`` wheel.

ocrstream never downloads weights: detection (``ocrstream/ocr/detection.py``), the text
direction classifier (``ocrstream/ocr/cleanup.py``) and recognition
(``ocrstream/ocr/recognition/ppocr.py``) open the files that ``rapidocr==3.10.0`` installs under
``rapidocr/models/``, in place (``importlib.resources``), never copied.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["rapidocr_model"]


def rapidocr_model(name: str) -> Path:
    """Path of model file ``name`` (e.g. ``"PP-OCRv6_det_small.onnx"``) in the installed rapidocr package.

    The path is returned whether or not the file exists; opening a missing one fails in
    ``ocrstream.ocr.runtime.onnx_session.make_session`` with FileNotFoundError.
    """
    return Path(str(importlib.resources.files("rapidocr") / "models" / name))

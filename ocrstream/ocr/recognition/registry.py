"""The recogniser registry: names -> implementations, and the factory that loads one by name.

Kept apart from the interface (:mod:`ocrstream.ocr.recognition.recognizer`) so that the interface
imports no implementation: the implementations import the interface, this module imports
the interface and (lazily, on load) the implementations -- no cycle. Loaders import their
module only when called, so loading "ppocr" never imports the TrOCR runtime (tokenizers & co.).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ocrstream.ocr.recognition.recognizer import Recognizer

__all__ = ["known_recognizers", "load_recognizer"]


def _load_ppocr(**options: Any) -> Recognizer:
    from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer

    return PPOCRRecognizer(**options)


def _load_trocr(**options: Any) -> Recognizer:
    from ocrstream.ocr.recognition.trocr import TrOCRRecognizer

    return TrOCRRecognizer(**options)


_LOADERS: dict[str, Callable[..., Recognizer]] = {"ppocr": _load_ppocr, "trocr": _load_trocr}


def known_recognizers() -> list[str]:
    """Names accepted by :func:`load_recognizer`, sorted."""
    return sorted(_LOADERS)


def load_recognizer(name: str = "ppocr", **options: Any) -> Recognizer:
    """Instantiate the recogniser registered as ``name`` with ``options`` (passed to its constructor).

    Raises:
        ValueError: ``name`` is unknown; the message lists the known names.
    """
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(
            f"unknown recogniser {name!r}; known: {', '.join(known_recognizers())}"
        ) from None
    return loader(**options)

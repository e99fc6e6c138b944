"""Interface shared by all text-line recognisers, and the factory that loads one by name.

A recogniser turns line crops (``(H, W, 3)`` uint8 BGR, any size) into
:class:`LineReading` objects, batching internally. Implementations register a
loader in ``_LOADERS`` (lazy imports, so loading "ppocr" never imports torch & co.).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["EMPTY_READING", "LineReading", "Recognizer", "known_recognizers", "load_recognizer"]


@dataclass(frozen=True)
class LineReading:
    """Recognised text of one line crop.

    Attributes:
        text: decoded text (may be empty).
        confidence: mean of ``char_probs`` in [0, 1]; 0.0 for empty text.
        char_probs: one probability in [0, 1] per character of ``text``.
        char_x: x centre of each character of ``text`` in crop pixels (float,
            0 = left edge of the crop as given to ``recognize``); for word boxes.
    """

    text: str
    confidence: float
    char_probs: tuple[float, ...]
    char_x: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.char_probs) == len(self.char_x) == len(self.text)):
            raise ValueError(
                f"text has {len(self.text)} chars but {len(self.char_probs)} probs "
                f"and {len(self.char_x)} positions"
            )

    @classmethod
    def from_chars(cls, text: str, char_probs: Sequence[float], char_x: Sequence[float]) -> LineReading:
        """Build a reading whose ``confidence`` is the mean of ``char_probs`` (0.0 if empty)."""
        probs = tuple(float(p) for p in char_probs)
        conf = float(np.mean(probs)) if probs else 0.0
        return cls(text, conf, probs, tuple(float(x) for x in char_x))


EMPTY_READING = LineReading("", 0.0, (), ())


@runtime_checkable
class Recognizer(Protocol):
    """A text-line recogniser.

    Attributes:
        name: registry name (e.g. ``"ppocr"``).
        provider: onnxruntime execution provider in use (e.g. ``"CPUExecutionProvider"``).
    """

    name: str
    provider: str

    def recognize(self, crops: Sequence[np.ndarray]) -> list[LineReading]:
        """Read each crop ``(H, W, 3)`` uint8 BGR of any size; results in input order.

        Implementations batch internally (at most ``max_batch_size`` crops per model
        call), sorting crops by aspect ratio so that padding stays small.
        """
        ...


def _load_ppocr(**options: Any) -> Recognizer:
    module = importlib.import_module("services.recognize.ppocr")
    return module.PPOCRRecognizer(**options)


def _load_trocr(**options: Any) -> Recognizer:
    module = importlib.import_module("services.recognize.trocr")
    return module.TrOCRRecognizer(**options)


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

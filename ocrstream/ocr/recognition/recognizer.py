"""Interface shared by all text-line recognisers: :class:`LineReading` and :class:`Recognizer`.

A recogniser turns line crops (``(H, W, 3)`` uint8 BGR, any size) into
:class:`LineReading` objects, batching internally. This module imports no implementation;
they are loaded by name through :mod:`ocrstream.ocr.recognition.registry` (``load_recognizer``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["EMPTY_READING", "LineReading", "Recognizer"]


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

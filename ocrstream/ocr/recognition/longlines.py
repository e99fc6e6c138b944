"""The crop budget of every recogniser, in one place: degenerate crops, long lines, characters.

A recogniser reads crops of any size, so its input is bounded here before any model runs
(:func:`read_within_budget`, used by :mod:`.ppocr` and :mod:`.trocr`):

* a crop less than ``min_side`` (2) px high or wide holds no readable text: empty reading;
* a crop whose aspect ratio w / h exceeds ``max_ratio`` is cut into overlapping chunks of
  aspect ``target_ratio`` (``overlap_ratio`` overlap), the chunks are read like crops and their
  texts merged at the overlaps -- the method of docTR's recognition predictor
  (``doctr/models/recognition/predictor/pytorch.py`` ``critical_ar``/``target_ar``/
  ``overlap_ratio``, ``predictor/_utils.py::split_crops``, ``recognition/utils.py::
  merge_strings``/``merge_multi_strings``, Apache-2.0), re-written to carry per-character
  probabilities and positions through the merge. So the model's input width is bounded by
  ``max_ratio`` x its input height, whatever the crop (a 20000x3 px crop no longer makes a
  gigabyte tensor);
* only the first ``max_chars * MAX_PITCH`` crop heights of width are read: a line holds at
  least one character per ``MAX_PITCH`` heights (character + gap), so anything further right
  would be cut by the character limit anyway; this bounds the chunks, hence the time, of a
  hostile 20000x3 crop;
* readings are cut to ``max_chars`` characters (``OCRSTREAM_MAX_REGION_CHARS``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ocrstream.ocr.recognition.recognizer import EMPTY_READING, LineReading

__all__ = ["CropBudget", "as_bgr", "merge_chunk_texts", "merge_strings_at", "read_within_budget",
           "split_wide_crop"]

#: docTR RecognitionPredictor constants (critical_ar, target_ar, overlap_ratio).
DOCTR_MAX_RATIO, DOCTR_TARGET_RATIO, DOCTR_OVERLAP_RATIO = 8.0, 6.0, 0.5
#: widest mean pitch (character + gap) of a text line, in line heights, for the read-width
#: bound: Latin print averages ~0.55 h (a receipt line of 36 characters spans ~20 heights).
MAX_PITCH = 1.0


@dataclass(frozen=True)
class CropBudget:
    """Limits applied to every crop before a model reads it (module docstring).

    Attributes:
        max_ratio: crops with w / h above this are split (inf: never).
        target_ratio: aspect ratio w / h of each chunk.
        overlap_ratio: overlap of consecutive chunks, fraction of the chunk width, in [0, 1).
        max_chars: characters kept per reading; also bounds the width read (``* MAX_PITCH``).
        min_side: crops with a side shorter than this (px) read as empty.
    """

    max_ratio: float = DOCTR_MAX_RATIO
    target_ratio: float = DOCTR_TARGET_RATIO
    overlap_ratio: float = DOCTR_OVERLAP_RATIO
    max_chars: int = 1000
    min_side: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap_ratio < 1.0:
            raise ValueError(f"overlap_ratio must be in [0, 1), got {self.overlap_ratio}")
        if not 0 < self.target_ratio <= self.max_ratio:
            raise ValueError(f"need 0 < target_ratio <= max_ratio, got {self.target_ratio}, {self.max_ratio}")
        if self.max_chars < 1 or self.min_side < 1:
            raise ValueError(f"max_chars and min_side must be >= 1, got {self.max_chars}, {self.min_side}")

    def read_width(self, height: int) -> int:
        """Widest part of a crop ``height`` px high that is read, px."""
        return math.ceil(self.max_chars * MAX_PITCH * height)


def as_bgr(crop: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR from a BGR, BGRA or grey crop (an empty crop stays empty).

    Raises:
        ValueError: not image-shaped.
    """
    crop = np.asarray(crop)
    if crop.ndim == 2 or (crop.ndim == 3 and crop.shape[2] in (1, 4)):
        if crop.size == 0:
            return np.zeros((*crop.shape[:2], 3), np.uint8)
        code = cv2.COLOR_BGRA2BGR if crop.ndim == 3 and crop.shape[2] == 4 else cv2.COLOR_GRAY2BGR
        return cv2.cvtColor(crop, code)
    if crop.ndim == 3 and crop.shape[2] == 3:
        return crop
    raise ValueError(f"crop must be (H, W, 3) uint8 BGR (grey and BGRA accepted), got shape {crop.shape}")


def split_wide_crop(crop: np.ndarray, max_ratio: float = DOCTR_MAX_RATIO, target_ratio: float = DOCTR_TARGET_RATIO,
                    overlap_ratio: float = DOCTR_OVERLAP_RATIO) -> tuple[list[np.ndarray], list[int], float]:
    """Cut a crop with w / h > ``max_ratio`` into overlapping chunks (docTR ``split_crops``).

    Chunks are ``ceil(h * target_ratio)`` px wide, consecutive ones overlap by
    ``floor(width * overlap_ratio)`` px, the last one is right-aligned.

    Returns:
        ``(chunks, x_starts, last_overlap_ratio)``; a crop that needs no split is returned alone
        with ``x_starts == [0]`` and ratio 0.0.

    Raises:
        ValueError: ``overlap_ratio`` not in [0, 1).
    """
    if not 0.0 <= overlap_ratio < 1.0:
        raise ValueError(f"overlap_ratio must be in [0, 1), got {overlap_ratio}")
    h, w = crop.shape[:2]
    if h == 0 or w / h <= max_ratio:
        return [crop], [0], 0.0
    split_w = max(1, math.ceil(h * target_ratio))
    if w <= split_w:
        return [crop], [0], 0.0
    step = split_w - max(0, math.floor(split_w * overlap_ratio))
    starts = list(range(0, w - split_w + 1, step))
    if starts[-1] + split_w < w:
        starts.append(w - split_w)
    last = (starts[-2] + split_w - starts[-1]) / split_w if len(starts) > 1 else 0.0
    return [crop[:, s : s + split_w] for s in starts], starts, last


def merge_strings_at(a: str, b: str, overlap_ratio: float) -> tuple[int, int]:
    """Where docTR's ``merge_strings(a, b, overlap_ratio)`` joins two texts.

    Returns:
        ``(n_a, skip_b)`` such that the merged text is ``a[:n_a] + b[skip_b:]`` -- the last
        character of ``a`` and the first of ``b`` are distrusted (they may be cut), the
        overlap is the best zero-Hamming-distance alignment (closest to the expected
        overlap ``round(len(b) * overlap_ratio) - 2`` when several), else the alignment
        minimising Hamming distance + distance to the expected overlap.
    """
    if min(len(a), len(b)) == 0:
        return len(a), 0
    a_crop, b_crop = a[:-1], b[1:]
    max_overlap = min(len(a_crop), len(b_crop))
    scores = [sum(x != y for x, y in zip(a_crop[-i:], b_crop[:i])) for i in range(1, max_overlap + 1)]
    zeros = [i for i, sc in enumerate(scores) if sc == 0]
    expected = round(len(b) * overlap_ratio) - 2
    if len(zeros) == 1:
        return len(a) - 1, zeros[0] + 2
    if len(zeros) > 1:
        return len(a) - 1, min(zeros, key=lambda x: abs(x - expected)) + 2
    if expected < 1 or not scores:
        return len(a) - 1, 1
    combined = [sc + abs(i - expected) for i, sc in enumerate(scores)]
    return len(a) - 1, combined.index(min(combined)) + 2


def merge_chunk_texts(parts: Sequence[tuple[str, Sequence[float], Sequence[float]]], overlap_ratio: float,
                      last_overlap_ratio: float) -> tuple[str, list[float], list[float]]:
    """docTR ``merge_multi_strings`` over ``(text, char_probs, char_x)`` chunks, left to right.

    Returns:
        ``(text, char_probs, char_x)`` of the merged line; each kept character keeps the
        probability and x of the chunk it was taken from.
    """
    if not parts:
        return "", [], []
    text, probs, xs = parts[0][0], list(parts[0][1]), list(parts[0][2])
    for i in range(1, len(parts)):
        b, bp, bx = parts[i]
        ratio = last_overlap_ratio if i == len(parts) - 1 else overlap_ratio
        n_a, skip = merge_strings_at(text, b, ratio)
        text = text[:n_a] + b[skip:]
        probs = probs[:n_a] + list(bp[skip:])
        xs = xs[:n_a] + list(bx[skip:])
    return text, probs, xs


@dataclass(frozen=True)
class _Plan:
    pieces: range  # indices into the flat list of pieces read
    starts: list[int]  # x of each piece in the crop, px
    last_overlap: float


def read_within_budget(crops: Sequence[np.ndarray], read: Callable[[list[np.ndarray]], list[LineReading]],
                       budget: CropBudget) -> list[LineReading]:
    """Read ``crops`` through ``read`` (a recogniser's own batched reader) within ``budget``.

    ``read`` gets every piece at once (whole crops and chunks, ``(h, w, 3)`` uint8 BGR, each
    within ``budget.max_ratio``) and returns one reading per piece, ``char_x`` in piece px.
    Degenerate crops never reach it. Results are in input order, ``char_x`` in crop px.

    Raises:
        ValueError: a crop is not image-shaped.
    """
    images = [as_bgr(c) for c in crops]
    pieces: list[np.ndarray] = []
    plans: list[_Plan | None] = []
    for img in images:
        h, w = img.shape[:2]
        if min(h, w) < budget.min_side:
            plans.append(None)
            continue
        img = img[:, : budget.read_width(h)]
        chunks, starts, last = split_wide_crop(img, budget.max_ratio, budget.target_ratio, budget.overlap_ratio)
        plans.append(_Plan(range(len(pieces), len(pieces) + len(chunks)), starts, last))
        pieces.extend(chunks)
    readings = read(pieces) if pieces else []
    return [EMPTY_READING if plan is None else _merged(plan, readings, budget) for plan in plans]


def _merged(plan: _Plan, readings: Sequence[LineReading], budget: CropBudget) -> LineReading:
    """One crop's reading from its pieces' readings (merged at the overlaps), cut to max_chars."""
    probs: Sequence[float]
    xs: Sequence[float]
    if len(plan.pieces) == 1:
        reading = readings[plan.pieces[0]]
        text, probs, xs = reading.text, reading.char_probs, reading.char_x
        if len(text) <= budget.max_chars:
            return reading
    else:
        parts = [(readings[k].text, readings[k].char_probs, [s0 + x for x in readings[k].char_x])
                 for k, s0 in zip(plan.pieces, plan.starts)]
        text, probs, xs = merge_chunk_texts(parts, budget.overlap_ratio, plan.last_overlap)
    n = budget.max_chars
    return LineReading.from_chars(text[:n], probs[:n], xs[:n]) if text else EMPTY_READING

"""PP-OCRv6 (small) CTC text-line recogniser on ONNX Runtime.

Model: ``rapidocr/models/PP-OCRv6_rec_small.onnx`` from the installed ``rapidocr==3.10.0``
wheel (loaded in place via ``importlib.resources``, never copied). Input ``x``:
``(N, 3, 48, W)`` float32; output: ``(N, ceil(W / 8), 18710)`` softmax probabilities
over ``[blank] + dictionary + [" "]``. The dictionary (18708 symbols) is stored in the
ONNX ``metadata_props["character"]``, one symbol per line, exactly as rapidocr's
``inference_engine/onnxruntime/main.py::get_character_list`` reads it; the blank/space
layout is rapidocr's ``ch_ppocr_rec/utils.py::CTCLabelDecode.get_character``, which is
reused here.

Pre-processing follows rapidocr ``ch_ppocr_rec/main.py::resize_norm_img`` (itself
PaddleOCR ``tools/infer/predict_rec.py``): keep the aspect ratio, resize to height 48,
BGR order, ``(x / 255 - 0.5) / 0.5``, pad on the right with 0 (normalised grey) to the
batch width. Differences (all measured on the SROIE dev lines, see
``bench/bench_recognize.py``): the batch is padded to its widest crop (rounded up to a
multiple of 8 px) instead of at least 320 px, very wide crops are run alone at their
own width, and the decoder returns per-character probabilities and x positions.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

from services.core.onnx_session import chosen_provider, make_session
from services.recognize.recognizer import EMPTY_READING, LineReading

__all__ = ["PPOCRRecognizer", "REC_MODEL", "restore_spaces"]

log = logging.getLogger(__name__)

REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: model input height, rapidocr ``config.yaml`` ``Rec.rec_img_shape: [3, 48, 320]``.
REC_HEIGHT = 48
#: ``rec_img_shape`` width: rapidocr/PaddleOCR pad every batch to at least 320 px.
PADDLE_MIN_WIDTH = 320
#: resized-px per CTC timestep: the network downsamples width by 8 (output T = ceil(W / 8)).
FRAME_STRIDE = 8
#: per-channel normalisation, rapidocr ``ch_ppocr_rec/main.py::resize_norm_img``.
NORM_MEAN, NORM_STD = 0.5, 0.5
_BLANK = 0


def model_path() -> Path:
    """Path of the recognition model inside the installed rapidocr package."""
    return Path(str(importlib.resources.files("rapidocr") / "models" / REC_MODEL))


def read_dictionary(session) -> list[str]:
    """CTC label table ``["blank", *dictionary, " "]`` of the session's model (via rapidocr's decoder).

    Raises:
        KeyError: the model carries no ``character`` metadata.
    """
    meta = session.get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise KeyError("recognition model has no 'character' metadata_props entry")
    return CTCLabelDecode(character=meta["character"].splitlines()).character


def resized_width(h: int, w: int, height: int = REC_HEIGHT) -> int:
    """Width (px) of an ``h x w`` crop resized to ``height`` keeping the aspect ratio (>= 1)."""
    return max(1, math.ceil(height * w / max(h, 1)))


def _normalise(crop: np.ndarray, width: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR -> ``(3, 48, width)`` float32 in [-1, 1]."""
    img = cv2.resize(crop, (width, REC_HEIGHT), interpolation=cv2.INTER_AREA if crop.shape[0] > REC_HEIGHT else cv2.INTER_LINEAR)
    img = img.astype(np.float32) * (1.0 / (255.0 * NORM_STD)) - NORM_MEAN / NORM_STD
    return img.transpose(2, 0, 1)


def _as_bgr(crop: np.ndarray) -> np.ndarray:
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    if crop.ndim == 3 and crop.shape[2] == 3:
        return crop
    if crop.ndim == 3 and crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"crop must be (H, W, 3) BGR, got shape {crop.shape}")


def ctc_greedy(
    probs: np.ndarray, *, space_index: int, space_threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy CTC decoding of one line, with optional space restoration.

    Args:
        probs: ``(T, C)`` softmax output of one line (valid timesteps only).
        space_index: label of the space symbol (last label of the PP-OCR table).
        space_threshold: where two consecutive non-space symbols are separated by
            blank timesteps in which p(space) peaks above this value, a space is
            inserted (the greedy path emitted none); None disables it.

    Returns:
        ``(labels, probs, centres)`` per emitted symbol: repeated labels merged,
        blanks dropped; ``probs`` is the highest probability over the merged
        timesteps (for an inserted space: its peak p(space)); ``centres`` the mean
        timestep index of the run (inserted space: its peak timestep), float frames.
    """
    labels = probs.argmax(axis=1)
    if labels.size == 0:
        return labels, np.zeros(0), np.zeros(0)
    best = np.take_along_axis(probs, labels[:, None], axis=1)[:, 0]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    keep = labels[starts] != _BLANK
    run_prob = np.maximum.reduceat(best, starts)[keep]
    centres = ((starts + ends - 1) / 2.0)[keep]
    run_labels, starts, ends = labels[starts][keep], starts[keep], ends[keep]
    if space_threshold is None or run_labels.size < 2:
        return run_labels, run_prob, centres
    return _insert_spaces(
        run_labels, run_prob, centres, starts, ends, probs[:, space_index], space_index, space_threshold
    )


def _insert_spaces(labels, probs, centres, starts, ends, p_space, space_index, threshold):
    """Insert ``space_index`` between runs k-1, k where max p(space) over the gap > threshold."""
    out_l, out_p, out_c = [labels[0]], [probs[0]], [centres[0]]
    for k in range(1, labels.size):
        lo, hi = ends[k - 1], starts[k]
        if hi > lo and labels[k] != space_index and labels[k - 1] != space_index:
            peak = lo + int(np.argmax(p_space[lo:hi]))
            if p_space[peak] > threshold:
                out_l.append(space_index)
                out_p.append(float(p_space[peak]))
                out_c.append(float(peak))
        out_l.append(labels[k])
        out_p.append(probs[k])
        out_c.append(centres[k])
    return np.asarray(out_l), np.asarray(out_p, dtype=np.float64), np.asarray(out_c, dtype=np.float64)


def restore_spaces(
    text: str, probs: Sequence[float], xs: Sequence[float], *, gap_factor: float, min_pairs: int = 3
) -> tuple[str, list[float], list[float]]:
    """Insert a space where two consecutive characters are unusually far apart.

    The line's character pitch is the median distance between the x centres of
    adjacent characters not separated by a space; where a gap exceeds
    ``gap_factor`` times that pitch and the model emitted no space, a space is
    inserted at the midpoint (probability = mean of its neighbours'). Lines with
    fewer than ``min_pairs`` adjacent pairs are returned unchanged.

    Returns:
        ``(text, probs, xs)`` with the inserted spaces.
    """
    pairs = [
        xs[i + 1] - xs[i]
        for i in range(len(text) - 1)
        if text[i] != " " and text[i + 1] != " "
    ]
    if len(pairs) < min_pairs:
        return text, list(probs), list(xs)
    limit = gap_factor * float(np.median(pairs))
    out_t, out_p, out_x = [text[0]], [probs[0]], [xs[0]]
    for i in range(1, len(text)):
        if text[i] != " " and text[i - 1] != " " and xs[i] - xs[i - 1] > limit:
            out_t.append(" ")
            out_p.append((probs[i] + probs[i - 1]) / 2.0)
            out_x.append((xs[i] + xs[i - 1]) / 2.0)
        out_t.append(text[i])
        out_p.append(probs[i])
        out_x.append(xs[i])
    return "".join(out_t), out_p, out_x


def _restrict(table: list[str], charset: str | None) -> tuple[np.ndarray | None, list[str]]:
    """Output columns (blank, the symbols in ``charset``, space) and their labels; None = all."""
    if charset is None:
        return None, table
    keep = [0] + [i for i in range(1, len(table) - 1) if table[i] in charset] + [len(table) - 1]
    return np.asarray(keep), [table[i] for i in keep]


class PPOCRRecognizer:
    """PP-OCRv6 small CTC recogniser (see module docstring for the model contract).

    Args:
        max_batch_size: crops per model call (default 32).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``services.core.onnx_session``).
        threads: intra-op threads; None reads ``$OCRSTREAM_ORT_THREADS``.
        space_restoration: insert spaces at unusually wide character gaps
            (:func:`restore_spaces`).
        space_gap_factor: gap / median pitch above which a space is inserted.
        min_width: minimum padded input width in px (rapidocr uses 320; 0 = none).
        max_batch_width: crops whose resized width exceeds this (px) are run one at a
            time at their own width so they do not inflate a batch's padding.
        model: path of an alternative ``.onnx`` with the same contract.

    Raises:
        ValueError: ``max_batch_size < 1``.
    """

    name = "ppocr"

    def __init__(
        self,
        *,
        max_batch_size: int = 32,
        device: str = "auto",
        threads: int | None = None,
        space_restoration: bool = True,
        space_threshold: float = 0.1,
        space_gap_factor: float | None = None,
        min_width: int = 0,
        max_batch_width: int = 1600,
        charset: str | None = None,
        model: str | Path | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.space_restoration = space_restoration
        self.space_threshold = space_threshold
        self.space_gap_factor = space_gap_factor
        self.min_width = min_width
        self.max_batch_width = max_batch_width
        self._session = make_session(model or model_path(), device=device, threads=threads)
        self._input = self._session.get_inputs()[0].name
        self._columns, self._chars = _restrict(read_dictionary(self._session), charset)
        self.provider = chosen_provider(self._session)

    # -- batching -------------------------------------------------------------
    def _batches(self, widths: list[int]) -> list[list[int]]:
        """Index groups: sorted by resized width, <= max_batch_size, wide crops alone."""
        order = sorted(range(len(widths)), key=widths.__getitem__)
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            if widths[i] > self.max_batch_width:
                batches.append([i])
                continue
            current.append(i)
            if len(current) == self.max_batch_size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        return batches

    def _pad_width(self, widths: Sequence[int]) -> int:
        w = max(max(widths), self.min_width)
        return -(-w // FRAME_STRIDE) * FRAME_STRIDE

    def _run(self, crops: Sequence[np.ndarray], widths: Sequence[int]) -> np.ndarray:
        pad = self._pad_width(widths)
        batch = np.zeros((len(crops), 3, REC_HEIGHT, pad), dtype=np.float32)
        for k, (crop, w) in enumerate(zip(crops, widths)):
            batch[k, :, :, :w] = _normalise(crop, w)
        return self._session.run(None, {self._input: batch})[0]

    # -- decoding -------------------------------------------------------------
    def _decode(self, probs: np.ndarray, resized_w: int, crop_w: int) -> LineReading:
        """``probs`` (T, C) of one line -> reading with char probs and x in crop px."""
        n_valid = min(probs.shape[0], -(-resized_w // FRAME_STRIDE))
        probs = probs[:n_valid] if self._columns is None else probs[:n_valid, self._columns]
        threshold = self.space_threshold if self.space_restoration else None
        run_labels, run_probs, centres = ctc_greedy(
            probs, space_index=len(self._chars) - 1, space_threshold=threshold
        )
        if run_labels.size == 0:
            return EMPTY_READING
        text = "".join(self._chars[i] for i in run_labels)
        xs = (centres + 0.5) * FRAME_STRIDE * (crop_w / resized_w)
        chars_p, chars_x = run_probs.tolist(), xs.tolist()
        if self.space_gap_factor is not None:
            text, chars_p, chars_x = restore_spaces(
                text, chars_p, chars_x, gap_factor=self.space_gap_factor
            )
        return LineReading.from_chars(text, chars_p, chars_x)

    def recognize(self, crops: Sequence[np.ndarray]) -> list[LineReading]:
        """Read line crops ``(H, W, 3)`` uint8 BGR (grey/BGRA accepted); results in input order.

        Raises:
            ValueError: a crop is not 2-D/3-D image-shaped.
        """
        images = [_as_bgr(np.asarray(c)) for c in crops]
        widths = [resized_width(*img.shape[:2]) for img in images]
        out: list[LineReading] = [EMPTY_READING] * len(images)
        for idx in self._batches(widths):
            valid = [i for i in idx if images[i].size > 0]
            if not valid:
                continue
            probs = self._run([images[i] for i in valid], [widths[i] for i in valid])
            for k, i in enumerate(valid):
                out[i] = self._decode(probs[k], widths[i], images[i].shape[1])
        return out

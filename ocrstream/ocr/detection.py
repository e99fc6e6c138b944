"""Text-line detection with PP-OCRv6 (small) DBNet on ONNX Runtime, crops and reading order.

Model: ``rapidocr/models/PP-OCRv6_det_small.onnx`` from the installed ``rapidocr==3.10.0``
wheel (opened in place via ``importlib.resources``). Input ``x``: ``(1, 3, H, W)``
float32 with H, W multiples of 32; output ``(1, 1, H, W)`` text probability map.

Pre-processing is rapidocr's ``ch_ppocr_det/utils.py::DetPreProcess`` resize with
``limit_type="max"`` (long side <= ``max_side``, each side rounded to a multiple of 32) and its
normalisation ``(x / 255 - 0.5) / 0.5`` (rapidocr ``config.yaml`` ``Det.mean/std``), computed by
OpenCV's ``cv2.dnn.blobFromImage`` in one float32 pass (:func:`det_input`).
Post-processing is rapidocr's ``DBPostProcess`` (a port of PaddleOCR
``ppocr/postprocess/db_postprocess.py``) with rapidocr's ``config.yaml`` ``Det``
defaults: ``thresh=0.3``, ``box_thresh=0.5``, ``unclip_ratio=1.6``,
``max_candidates=1000``, ``use_dilation=True``, ``score_mode="fast"``. It maps boxes
straight to page pixels and orders corners clockwise from the top-left.

:func:`attach_colons` (called by the preprocess stage after :meth:`LineDetector.detect`)
extends line quads over the isolated colons DBNet does not detect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from rapidocr.ch_ppocr_det.utils import DBPostProcess, DetPreProcess
from rapidocr.utils.process_img import get_rotate_crop_image

from ocrstream.ocr.cleanup import ANALYSIS_PIXELS, InkComponents, glyph_height, ink_mask, thumbnail, thumbnail_scale
from ocrstream.ocr.runtime.models import rapidocr_model
from ocrstream.ocr.runtime.onnx_session import Device, chosen_provider, make_session

__all__ = [
    "DET_MODEL",
    "DetectedLine",
    "LineDetector",
    "attach_colons",
    "crop_line",
    "det_input",
    "reading_order",
    "text_angle",
    "visual_line_ids",
    "visual_lines",
]

DET_MODEL = "PP-OCRv6_det_small.onnx"
#: rapidocr ``config.yaml`` ``Det`` section (PaddleOCR ``configs/det`` inference defaults).
DB_THRESH, DB_BOX_THRESH, DB_UNCLIP_RATIO, DB_MAX_CANDIDATES = 0.3, 0.5, 1.6, 1000
DET_MEAN = DET_STD = (0.5, 0.5, 0.5)
#: default long-side limit (px) of the page fed to DBNet; see ``bench/bench_pages.py``.
DEFAULT_MAX_SIDE = 1536
#: the page is fed to DBNet at the size that makes its median glyph this tall (px), within
#: [``min_side``, ``max_side``] (:meth:`LineDetector.input_side`). Measured for issue 22 (the 60 SROIE
#: dev pages, ONNX Runtime fp32, 1 thread, one run; ``bench/bench_pages.py --glyph-px``): fixed 1536
#: 2.94 % CER ci / 0.84 CPU-s per page; 12 px 2.95 % / 0.70; 10 px 3.08 % / 0.66 (over the 0.1-point
#: budget). On the first 30 alone 9 px and 11 px still read within 0.05 point: the rise is gradual.
DEFAULT_GLYPH_PX = 12.0
#: the smallest long side (px) a page is shrunk to for DBNet, however large its glyphs.
DEFAULT_MIN_SIDE = 640
#: two boxes share a visual line when their vertical spans overlap by more than this
#: fraction of the smaller height (the SROIE dev ground truth's rule, README "Contents").
SAME_LINE_OVERLAP = 0.5
#: DB boxes (unclip 1.6) are 1.34x as tall as the annotated text boxes (median over the
#: matched SROIE dev page boxes), so spans are scaled by ~1/1.34 about their centre before
#: the overlap rule; page CER 3.14 -> 3.06 %. Pass 1.0 for tight (annotated) boxes.
SPAN_SCALE = 0.75
#: lines are assembled in the page's own frame (:func:`text_angle`) when its text runs at least
#: this many degrees off the horizontal; below it, in page pixels as they are. Scans lie within
#: ~2 degrees (the 60 SROIE dev scans: at most 1.9) and are annotated, and were read, in page
#: pixels: at 1.5 degrees two of them regrouped rows (+0.06 point CER against that annotation),
#: at 2.5 none does; the issue's phone photos at 6-12 degrees paired amounts with the wrong labels.
FRAME_MIN_DEG = 2.5
#: quads count for the angle when they are at least this many times as wide as tall (lines, not
#: single glyphs or stamps, whose min-area rectangles have no meaningful direction).
FRAME_MIN_ASPECT = 3.0


@dataclass(frozen=True)
class DetectedLine:
    """One detected text line.

    Attributes:
        quad: ``(4, 2)`` float32 corners in page pixels (x, y), clockwise from top-left.
        score: DB box score, mean text probability inside the box, in [0, 1].
    """

    quad: np.ndarray
    score: float


def model_path() -> Path:
    """Path of the detection model inside the installed rapidocr package."""
    return rapidocr_model(DET_MODEL)


class LineDetector:
    """PP-OCRv6 small DBNet text-line detector.

    Args:
        max_side: the page is resized so that its long side is <= this (px) and each
            side is a multiple of 32; smaller pages are not enlarged.
        glyph_px: shrink the page further, to the long side that makes its median glyph this tall
            (px, :func:`ocrstream.ocr.cleanup.glyph_height`), but not below ``min_side``
            (:data:`DEFAULT_GLYPH_PX`); None or 0 feeds every page at ``max_side``.
        min_side: the smallest long side (px) ``glyph_px`` shrinks a page to.
        thresh, box_thresh, unclip_ratio: DB post-processing (module docstring).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``ocrstream.ocr.runtime.onnx_session``).
        threads: intra-op threads; None reads ``$OCRSTREAM_ORT_THREADS``, else 1
            (:mod:`ocrstream.ocr.runtime.onnx_session` says why, for ONNX Runtime and OpenVINO alike).
        model: alternative ``.onnx`` with the same contract.
        backend: inference backend (``ocrstream.ocr.runtime.onnx_session.BACKENDS``); None reads
            ``$OCRSTREAM_INFERENCE`` (default auto).

    Raises:
        ValueError: ``max_side < 32``, ``min_side`` outside [32, max_side], ``glyph_px < 0``, an unknown backend.
    """

    def __init__(
        self,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        glyph_px: float | None = DEFAULT_GLYPH_PX,
        min_side: int = DEFAULT_MIN_SIDE,
        thresh: float = DB_THRESH,
        box_thresh: float = DB_BOX_THRESH,
        unclip_ratio: float = DB_UNCLIP_RATIO,
        device: Device = "auto",
        threads: int | None = None,
        model: str | Path | None = None,
        backend: str | None = None,
    ) -> None:
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        if not 32 <= min_side <= max_side:
            raise ValueError(f"min_side must be in [32, max_side={max_side}], got {min_side}")
        if glyph_px is not None and glyph_px < 0:
            raise ValueError(f"glyph_px must be >= 0, got {glyph_px}")
        self.max_side, self.min_side, self.glyph_px = max_side, min_side, glyph_px or None
        self._post = DBPostProcess(
            thresh=thresh,
            box_thresh=box_thresh,
            max_candidates=DB_MAX_CANDIDATES,
            unclip_ratio=unclip_ratio,
            score_mode="fast",
            use_dilation=True,
        )
        self._session = make_session(model or model_path(), device=device, threads=threads, backend=backend)
        self._input = self._session.get_inputs()[0].name
        self.provider = chosen_provider(self._session)
        # Return the CPU arena's free chunks after every run: pages vary in size, and the arena
        # otherwise keeps growing by doubling (measured on two 1654x1692 pages: 868 MB resident
        # and 2.16 GB of address space kept, over the decoder's 2 GiB limit; with shrinkage
        # 259 MB kept, peak 635 MB, the same CPU time).
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def input_side(self, image_bgr: np.ndarray, glyph_height_px: float | None = None) -> int:
        """The long side (px) the page is resized to at most for DBNet: ``max_side``, or with
        ``glyph_px`` the side at which its median glyph is ``glyph_px`` tall, clipped to
        [``min_side``, ``max_side``] (``max_side`` when no glyphs are found). The median glyph
        height is ``glyph_height_px`` when the caller measured it already (the clean-up's
        orientation step: :class:`ocrstream.ocr.cleanup.Cleaned`), else measured here."""
        if self.glyph_px is None:
            return self.max_side
        height = glyph_height_px if glyph_height_px is not None else glyph_height(image_bgr)
        if height is None or height <= 0:
            return self.max_side
        wanted = max(image_bgr.shape[:2]) * self.glyph_px / height
        return int(np.clip(wanted, self.min_side, self.max_side))

    def probability_map(self, image_bgr: np.ndarray, glyph_height_px: float | None = None) -> np.ndarray | None:
        """DBNet output ``(1, 1, h, w)`` float32 for the page resized to :meth:`input_side`, None
        if it is degenerate."""
        side = self.input_side(image_bgr, glyph_height_px)
        x = det_input(image_bgr, side)
        if x is None:
            return None
        probs: np.ndarray = self._session.run(None, {self._input: x}, self._run_options)[0]
        return probs

    def detect(self, image_bgr: np.ndarray, glyph_height_px: float | None = None) -> list[DetectedLine]:
        """Text lines of a page ``(H, W, 3)`` uint8 BGR, in reading order (:func:`reading_order`);
        ``glyph_height_px``: its median glyph height when known (:meth:`input_side`).

        Raises:
            ValueError: the image is not ``(H, W, 3)``.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"page must be (H, W, 3) uint8 BGR, got shape {image_bgr.shape}")
        pred = self.probability_map(image_bgr, glyph_height_px)
        if pred is None:
            return []
        boxes, scores = self._post(pred, image_bgr.shape[:2])
        lines = [DetectedLine(np.asarray(b, dtype=np.float32), float(s)) for b, s in zip(boxes, scores)]
        return [lines[i] for i in reading_order([line.quad for line in lines])]


def det_input(image_bgr: np.ndarray, side: int) -> np.ndarray | None:
    """DBNet's input ``(1, 3, H, W)`` float32 for a page ``(h, w, 3)`` uint8 BGR: resized by
    rapidocr's ``DetPreProcess.resize`` (long side <= ``side``, sides multiples of 32), then
    ``(x / 255 - 0.5) / 0.5`` per channel, channels first; None when the page is degenerate.

    The same values as rapidocr's ``DetPreProcess`` (within 1.2e-7, float32 rounding), whose
    normalisation runs in float64 through four page-sized temporaries: measured on 10 dev pages,
    17 CPU-ms per page for its normalisation against 4.4 here (``cv2.dnn.blobFromImage``:
    ``(x - 127.5) / 127.5``, one pass, transposed on the way).
    """
    resized = DetPreProcess(side, "max", list(DET_MEAN), list(DET_STD)).resize(image_bgr)
    if resized is None:
        return None
    # mean = std = 0.5 (DET_MEAN, DET_STD): (x / 255 - 0.5) / 0.5 == (x - 127.5) / 127.5
    blob: np.ndarray = cv2.dnn.blobFromImage(resized, 1.0 / 127.5, mean=(127.5, 127.5, 127.5))
    return blob


def crop_line(image_bgr: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Perspective crop of ``quad`` ((4, 2) page px, clockwise from top-left) from the page.

    rapidocr ``utils/process_img.py::get_rotate_crop_image`` (PaddleOCR
    ``tools/infer/utility.py``): width/height = longest opposite edges, cubic
    interpolation, replicated border; a crop at least 1.5x taller than wide is
    rotated 90 degrees counter-clockwise (vertical text). Returns ``(h, w, 3)`` uint8.

    An upright rectangle with whole-pixel corners inside the page (most boxes of a scanned or
    deskewed page: DB rounds its corners to pixels) maps to the crop by a whole-pixel shift, where
    cubic interpolation samples the pixels themselves: it is cut out as it is, the same pixels
    without the warp (:func:`_upright_crop`; 64 % of the 6,829 boxes of the SROIE dev and kie pages,
    0.14 CPU-ms each).
    """
    points = np.asarray(quad, dtype=np.float32)
    upright = _upright_crop(image_bgr, points)
    return np.ascontiguousarray(upright if upright is not None else get_rotate_crop_image(image_bgr, points))


def _upright_crop(image_bgr: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """``get_rotate_crop_image``'s crop of ``points`` when they are an upright rectangle with
    whole-pixel corners within the page, cut out as a view; None for any other quad."""
    if points.shape != (4, 2) or not np.array_equal(points, np.round(points)):
        return None
    (x0, y0), (x1, y1) = points[0].astype(int), points[2].astype(int)
    if not (points[1, 0] == x1 and points[1, 1] == y0 and points[3, 0] == x0 and points[3, 1] == y1):
        return None
    if not (0 <= x0 < x1 <= image_bgr.shape[1] and 0 <= y0 < y1 <= image_bgr.shape[0]):
        return None
    crop = image_bgr[y0:y1, x0:x1]
    return np.rot90(crop) if (y1 - y0) / (x1 - x0) >= 1.5 else crop


#: colon search, in units of the line height h (the median DB box height of the page): a colon
#: is two ink dots COLON_DOT h across, one above the other with centres COLON_GAP h apart, no
#: other dot within h/2 of their middle, its centre within COLON_CENTRE h of the middle of a
#: box at most COLON_REACH h away; that box is extended past it by COLON_PAD h (about DB's own
#: unclip margin). Tuned on the SROIE dev pages (bench_pages --no-colons for the comparison).
COLON_DOT, COLON_GAP, COLON_CENTRE, COLON_REACH, COLON_PAD = (0.06, 0.3), (0.15, 0.6), 0.25, 1.5, 0.3
#: pixel count of the page thumbnail the colon search runs on (about the detector's input).
COLON_PIXELS = ANALYSIS_PIXELS


def _free_dots(ink: np.ndarray, quads: Sequence[np.ndarray], sizes: tuple[float, float],
               components: InkComponents | None = None) -> np.ndarray:
    """``(N, 4)`` [x0, y0, x1, y1] of ink components no quad touches, ``sizes[0]-sizes[1]`` px across;
    ``components``: the mask's, when made."""
    covered = np.zeros_like(ink)
    cv2.fillPoly(covered, [np.round(q).astype(np.int32) for q in quads], 1)
    found = components if components is not None else InkComponents.of(ink)
    labels, stats = found.labels, found.stats
    n = len(stats)
    touched = np.bincount(labels[covered > 0], minlength=n) > 0
    x, y, w, h = (stats[:, k] for k in range(4))
    keep = ~touched & (np.maximum(w, h) >= sizes[0]) & (np.maximum(w, h) <= sizes[1])
    keep[0] = False
    dots: np.ndarray = np.stack([x, y, x + w, y + h], axis=1)[keep].astype(np.float64)
    return dots


#: candidate (dot, dot) comparisons :func:`_near` makes at once: 4 arrays of this many int64/float64,
#: ~64 MB. A page of dense speckle (5,939 free dots on one SROIE kie page) makes ~0.36 M per search.
COLON_CANDIDATES = 2_000_000


def _near(keys: np.ndarray, low: np.ndarray, high: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (query, index) pairs: for each query q, the indices of ``keys`` ((N,) float64) that
    lie in [``low[q]``, ``high[q]``] or within 1e-9 of it (a superset: the caller applies its exact
    test), found by binary search in the sorted keys; at most :data:`COLON_CANDIDATES` pairs per chunk
    (a query with more is a chunk of its own). Work: O((N + Q) log N + pairs)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    slack = 1e-9 * (1.0 + np.abs(ordered).max(initial=0.0))
    first = np.searchsorted(ordered, low - slack, "left")
    counts = np.maximum(np.searchsorted(ordered, high + slack, "right") - first, 0)
    ends = np.cumsum(counts)
    start = 0
    while start < len(low):
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] - counts[start] + COLON_CANDIDATES, "right")))
        n = counts[start:stop]
        query = np.repeat(np.arange(start, stop), n)
        rank = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        yield query, order[np.repeat(first[start:stop], n) + rank]
        start = stop


def _stacked_pairs(centres: np.ndarray, sizes: np.ndarray, line_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index arrays of the dot pairs where j sits under i, as the dots of a colon
    (``COLON_GAP``), ordered by i then j."""
    y = centres[:, 1]
    found_i, found_j = [np.zeros(0, np.intp)], [np.zeros(0, np.intp)]
    for i, j in _near(y, y + COLON_GAP[0] * line_height, y + COLON_GAP[1] * line_height):
        dx, dy = np.abs(centres[j, 0] - centres[i, 0]), (centres[j, 1] - centres[i, 1]) / line_height
        below = (dx <= np.maximum(sizes[j, 0], sizes[i, 0])) & (dy >= COLON_GAP[0]) & (dy <= COLON_GAP[1])
        found_i.append(i[below])
        found_j.append(j[below])
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    order = np.lexsort((j, i))
    return i[order], j[order]


def _colon_like(centres: np.ndarray, sizes: np.ndarray, i: np.ndarray, j: np.ndarray,
                line_height: float) -> np.ndarray:
    """Per pair (i, j): the two dots are alike (within 2x in width and height) and alone (no third dot
    within h/2 of their middle, on both axes)."""
    alike = np.all(np.maximum(sizes[i], sizes[j]) <= 2 * np.minimum(sizes[i], sizes[j]), axis=1)
    middles = (centres[i] + centres[j]) / 2
    crowd = np.zeros(len(middles), np.intp)
    half = line_height / 2
    for pair, dot in _in_squares(centres, middles, half):
        close = np.all(np.abs(centres[dot] - middles[pair]) <= half, axis=1)
        crowd += np.bincount(pair[close], minlength=len(middles))
    result: np.ndarray = alike & (crowd == 2)
    return result


def _in_squares(points: np.ndarray, centres: np.ndarray, half: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (square, point) pairs: for each square of half-side ``half`` around ``centres[q]``,
    the ``points`` ((N, 2) float64) in it or near it (a superset: the caller applies its exact test).

    Points are binned into cells ``half`` px wide; a square spans at most 3 cells per axis, and one
    more on each side is searched against rounding. Each column of cells is one range of the points
    sorted by (column, row): :func:`_near` finds it. Work: O((N + Q) log N + the points in the cells).
    """
    origin = points.min(axis=0) if len(points) else np.zeros(2)
    cells = np.floor((points - origin) / half).astype(np.int64)
    rows = int(cells[:, 1].max(initial=0)) + 1
    keys = (cells[:, 0] * rows + cells[:, 1]).astype(np.float64)
    low, high = np.floor((centres - half - origin) / half) - 1, np.floor((centres + half - origin) / half) + 1
    first_row, last_row = np.clip(low[:, 1], 0, rows - 1), np.clip(high[:, 1], 0, rows - 1)
    for column in range(5):
        x = low[:, 0] + column
        inside = (x >= 0) & (x <= high[:, 0]) & (first_row <= last_row)
        wanted = np.flatnonzero(inside)
        for square, point in _near(keys, x[wanted] * rows + first_row[wanted], x[wanted] * rows + last_row[wanted]):
            yield wanted[square], point


def _colons(dots: np.ndarray, line_height: float) -> list[np.ndarray]:
    """[x0, y0, x1, y1] of the dot pairs among ``dots`` ((N, 4) boxes) shaped like a colon."""
    centres, sizes = (dots[:, :2] + dots[:, 2:]) / 2, dots[:, 2:] - dots[:, :2]
    i, j = _stacked_pairs(centres, sizes, line_height)
    keep = _colon_like(centres, sizes, i, j, line_height)
    return [np.concatenate([np.minimum(dots[a, :2], dots[b, :2]), np.maximum(dots[a, 2:], dots[b, 2:])])
            for a, b in zip(i[keep], j[keep])]


def _extend(quad: np.ndarray, x_to: float) -> np.ndarray:
    """``quad`` with its left or right edge moved along its top/bottom edges to reach ``x_to``.

    Quads steeper than 60 degrees (vertical text) are returned unchanged.
    """
    q = quad.astype(np.float64).copy()
    u = (q[1] - q[0]) / max(float(np.linalg.norm(q[1] - q[0])), 1e-9)
    if u[0] < 0.5:
        return quad
    right = x_to > q[:, 0].max()
    ends = [1, 2] if right else [0, 3]
    shift = x_to - (q[ends, 0].max() if right else q[ends, 0].min())
    q[ends] += u * shift / u[0]
    return q.astype(np.float32)


def _box_beside(bounds: np.ndarray, colon: np.ndarray) -> int | None:
    """Index of the nearest box ([x0, y0, x1, y1] rows) on the colon's line within reach, or None."""
    heights = bounds[:, 3] - bounds[:, 1]
    centre_y = (bounds[:, 1] + bounds[:, 3]) / 2
    gap = np.maximum(bounds[:, 0] - colon[2], colon[0] - bounds[:, 2])
    near = (np.abs((colon[1] + colon[3]) / 2 - centre_y) <= COLON_CENTRE * heights) & (gap >= 0) \
        & (gap <= COLON_REACH * heights)
    return int(np.flatnonzero(near)[np.argmin(gap[near])]) if near.any() else None


def attach_colons(image_bgr: np.ndarray, quads: Sequence[np.ndarray],
                  ink: np.ndarray | None = None, components: InkComponents | None = None) -> list[np.ndarray]:
    """Quads ((4, 2) page px each) extended over the isolated colons DBNet left out beside them.

    DBNet does not fire on a colon standing alone between a label and its value ("Cashier
    : USER"): 59 of the 886 word errors on the SROIE dev pages were such missing ':'. On a
    thumbnail of the page (``COLON_PIXELS``), ink (:func:`ocrstream.ocr.cleanup.ink_mask`)
    that no quad touches is searched for colon-shaped dot pairs (``COLON_*``); each one found
    next to a quad, on its line, stretches that quad to include it, so the recogniser reads
    the colon with its neighbour. bench_pages: page CER ci 3.06 -> 2.97 %, WER ci 12.48 ->
    12.32 %, ~20 CPU-ms per page. Returns new quads in the input order (float32).

    ``ink``: that thumbnail's ink mask when the caller has it (the clean-up's orientation step makes
    it: :attr:`ocrstream.ocr.cleanup.Cleaned.ink_mask`); used when its shape is the thumbnail's, else
    the mask is made here. ``components``: that mask's :class:`ocrstream.ocr.cleanup.InkComponents`
    when the caller has them (:attr:`~ocrstream.ocr.cleanup.Cleaned.ink_components`), used with it.
    """
    quads = [np.asarray(q, dtype=np.float32) for q in quads]
    if not quads:
        return quads
    scale = thumbnail_scale(image_bgr.shape[:2], COLON_PIXELS)
    expected = (round(image_bgr.shape[0] * scale), round(image_bgr.shape[1] * scale)) if scale < 1.0 \
        else image_bgr.shape[:2]
    if ink is None or ink.shape != expected:
        grey, scale = thumbnail(image_bgr, COLON_PIXELS)
        ink, components = ink_mask(grey), None
    if components is not None and components.labels.shape != ink.shape:
        components = None
    small = [q * scale for q in quads]
    bounds = np.array([[*q.min(axis=0), *q.max(axis=0)] for q in small])
    heights = bounds[:, 3] - bounds[:, 1]
    line_height = float(np.median(heights))
    dots = _free_dots(ink, small, (COLON_DOT[0] * line_height, COLON_DOT[1] * line_height), components)
    for colon in _colons(dots, line_height):
        k = _box_beside(bounds, colon)
        if k is None:
            continue
        cx, half = (colon[0] + colon[2]) / 2, (colon[2] - colon[0]) / 2
        side = 1 if cx > bounds[k, 2] else -1
        small[k] = _extend(small[k], cx + side * (half + COLON_PAD * heights[k]))
        bounds[k] = [*small[k].min(axis=0), *small[k].max(axis=0)]
    return [q / scale for q in small]


def text_angle(quads: Sequence[np.ndarray] | np.ndarray) -> float:
    """Direction of a page's text lines, degrees (clockwise in page pixels, y down; 0 = horizontal).

    The width-weighted median of the angles of the top and bottom edges of the line quads
    (``(4, 2)`` page px each, clockwise from the top-left, as DBNet's post-processing orders
    them) that are at least ``FRAME_MIN_ASPECT`` times as wide as tall. 0.0 when no quad
    qualifies. Valid for skews within +-45 degrees (larger turns are the ``orientation``
    clean-up step's job).
    """
    if not len(quads):
        return 0.0
    q = np.asarray(quads, dtype=np.float64).reshape(len(quads), 4, 2)
    top, bottom = q[:, 1] - q[:, 0], q[:, 2] - q[:, 3]
    width = (np.hypot(*top.T) + np.hypot(*bottom.T)) / 2
    height = (np.hypot(*(q[:, 3] - q[:, 0]).T) + np.hypot(*(q[:, 2] - q[:, 1]).T)) / 2
    keep = width >= FRAME_MIN_ASPECT * np.maximum(height, 1e-6)
    if not keep.any():
        return 0.0
    angles = np.degrees(np.concatenate([np.arctan2(top[keep, 1], top[keep, 0]),
                                        np.arctan2(bottom[keep, 1], bottom[keep, 0])]))
    weights = np.concatenate([width[keep], width[keep]])
    order = np.argsort(angles)
    cumulative = np.cumsum(weights[order])
    return float(angles[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _in_page_frame(quads: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """``(N, 4, 2)`` quads turned by minus :func:`text_angle` about the origin (the text's own
    frame: its lines horizontal), or as they are when the angle is below ``FRAME_MIN_DEG``."""
    q = np.asarray(quads, dtype=np.float64).reshape(len(quads), -1, 2)
    angle = text_angle(q) if len(q) else 0.0
    if abs(angle) < FRAME_MIN_DEG:
        return q
    c, s = np.cos(np.radians(-angle)), np.sin(np.radians(-angle))
    turned: np.ndarray = q @ np.array([[c, s], [-s, c]])
    return turned


def _vertical_spans(quads: Sequence[np.ndarray] | np.ndarray, scale: float) -> np.ndarray:
    """``(N, 2)`` [top, bottom] of each quad's axis-aligned bounds, scaled about the centre."""
    if not len(quads):
        return np.zeros((0, 2))
    pts = np.asarray(quads, dtype=np.float64).reshape(len(quads), -1, 2)[:, :, 1]
    centre = (pts.min(axis=1) + pts.max(axis=1)) / 2
    half = (pts.max(axis=1) - pts.min(axis=1)) * scale / 2
    return np.stack([centre - half, centre + half], axis=1)


def visual_lines(quads: Sequence[np.ndarray] | Sequence[Sequence[Sequence[float]]] | np.ndarray, *,
                 span_scale: float = SPAN_SCALE) -> list[list[int]]:
    """Group quads ((4, 2) page px each) into visual lines, top to bottom, each left to right.

    The quads are first put in the text's own frame (turned by minus :func:`text_angle` when
    it is at least ``FRAME_MIN_DEG``), so that on a skewed page an amount stays on its
    label's line (at 12 degrees, page-pixel spans paired amounts with the next row's labels).
    Vertical spans (axis-aligned, scaled by ``span_scale`` about their centre) are visited
    by their top; a quad joins the visual line whose mean span it overlaps most, if that
    overlap exceeds ``SAME_LINE_OVERLAP`` of the smaller of the two heights, else it
    starts a new line. Lines are sorted by mean centre y, members by left-most x.
    Returns lists of indices into ``quads``.
    """
    framed = _in_page_frame(np.asarray(quads, dtype=np.float64)) if len(quads) else np.zeros((0, 4, 2))
    spans = _vertical_spans(framed, span_scale)
    groups: list[list[int]] = []
    line_spans = np.zeros((len(spans), 2))  # the mean span of each line so far, in its first rows
    for i in np.argsort(spans[:, 0], kind="stable"):
        lines = line_spans[:len(groups)]  # every line against this quad at once; the first best wins
        overlap = np.minimum(lines[:, 1], spans[i, 1]) - np.maximum(lines[:, 0], spans[i, 0])
        smaller = np.minimum(lines[:, 1] - lines[:, 0], spans[i, 1] - spans[i, 0])
        joins = np.where((overlap > SAME_LINE_OVERLAP * smaller) & (overlap > 0.0), overlap, -np.inf)
        best = int(np.argmax(joins)) if len(joins) and joins.max() > -np.inf else -1
        if best < 0:
            groups.append([int(i)])
            line_spans[len(groups) - 1] = spans[i]
        else:
            groups[best].append(int(i))
            line_spans[best] = spans[groups[best]].mean(axis=0)
    left = [float(np.asarray(q)[:, 0].min()) for q in framed]
    groups.sort(key=lambda g: float(spans[g].mean()))
    return [sorted(g, key=left.__getitem__) for g in groups]


def reading_order(quads: Sequence[np.ndarray], *, span_scale: float = SPAN_SCALE) -> list[int]:
    """Indices of ``quads`` in reading order: visual lines top to bottom, left to right within.

    See :func:`visual_lines` for the grouping rule.
    """
    return [i for line in visual_lines(quads, span_scale=span_scale) for i in line]


def visual_line_ids(quads: Sequence[np.ndarray], *, span_scale: float = SPAN_SCALE) -> list[int]:
    """Visual-line number (0 = top line) of each quad, in the order given (:func:`visual_lines`)."""
    ids = [0] * len(quads)
    for n, line in enumerate(visual_lines(quads, span_scale=span_scale)):
        for i in line:
            ids[i] = n
    return ids

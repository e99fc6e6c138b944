"""Page clean-up before text-line detection: named, switchable steps with a geometric record.

Every step is a function ``(page (H, W, 3) uint8 BGR) -> (page', Transform)``; pixel-only
steps return :meth:`Transform.identity`. :func:`apply` runs the requested steps in the
order of :data:`STEPS` (cheap geometry first, so later steps work on fewer pixels) and
composes their transforms, so that boxes found on the cleaned page can be mapped back to
ORIGINAL page pixels with :meth:`Transform.to_original` (events always carry original
page pixels).

Steps (constants and their sources are at each function):

* ``border``      crop to the paper: trim the dark scanner border (row/column profiles).
* ``downscale``   huge scans (long side > :data:`DOWNSCALE_MAX_SIDE`) shrunk with area
  averaging before detection.
* ``deskew``      skew up to :data:`MAX_SKEW_DEG`, projection-profile search (in the page's frame
  or turned a quarter, so a sideways page is straightened before it is turned).
* ``orientation`` 0/90/180/270: text-line blob length for 90 vs 0, then a page vote of the
  PP-OCR text-direction classifier (``ch_ppocr_mobile_v2.0_cls_mobile.onnx`` from the
  rapidocr wheel) over text-line blobs for 0 vs 180.
* ``denoise``     3x3 median filter (salt-and-pepper specks of thermal paper).
* ``contrast``    CLAHE on the L channel of CIE L*a*b*.

Which of them are worth it on a user's stream is measured by ``bench/bench_pages.py --stream
--ablation`` (upright, turned, skewed and perspective receipts); :data:`DEFAULT_STEPS` is the
winning combination (``border`` and ``orientation``; the other steps work, see
tests/unit/test_cleanup.py, but do not lower page CER).

Coordinates are pixel-index coordinates: x to the right, y down, (0, 0) the centre of the
top-left pixel (OpenCV's convention for ``warpAffine``/``resize``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import cast

import cv2
import numpy as np
import onnxruntime as ort
from rapidocr.ch_ppocr_cls.main import TextClassifier
from rapidocr.utils.process_img import get_rotate_crop_image

from ocrstream.ocr.runtime.models import rapidocr_model
from ocrstream.ocr.runtime.onnx_session import make_session

__all__ = [
    "DEFAULT_STEPS",
    "STEPS",
    "Cleaned",
    "Transform",
    "apply",
    "clean",
    "InkComponents",
    "contrast",
    "denoise",
    "deskew",
    "downscale",
    "estimate_skew",
    "glyph_height",
    "mask_skew",
    "ink_mask",
    "orientation",
    "page_orientation",
    "parse_steps",
    "remove_border",
    "rotate_quarters",
    "text_size",
    "thumbnail",
    "upside_down_probability",
]


# --- geometry record ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Transform:
    """Affine map from ORIGINAL page pixels to cleaned page pixels.

    Attributes:
        matrix: ``(3, 3)`` float64 homogeneous matrix; ``[x', y', 1] = matrix @ [x, y, 1]``.
    """

    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))

    @classmethod
    def identity(cls) -> Transform:
        """The transform of a step that does not move pixels."""
        return cls(np.eye(3))

    @classmethod
    def from_affine(cls, m: np.ndarray | Sequence[Sequence[float]]) -> Transform:
        """From a ``(2, 3)`` OpenCV affine matrix (as given to ``cv2.warpAffine``)."""
        return cls(np.vstack([np.asarray(m, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]]))

    def then(self, other: Transform) -> Transform:
        """This transform followed by ``other``."""
        return Transform(other.matrix @ self.matrix)

    @property
    def is_identity(self) -> bool:
        return bool(np.allclose(self.matrix, np.eye(3)))

    def to_cleaned(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` original page px -> ``(N, 2)`` float32 cleaned page px."""
        return _map(self.matrix, points)

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """``(N, 2)`` cleaned page px (e.g. a detected quad) -> ``(N, 2)`` float32 original page px."""
        return _map(np.linalg.inv(self.matrix), points)


def _map(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mapped: np.ndarray = (pts @ matrix[:2, :2].T + matrix[:2, 2]).astype(np.float32)
    return mapped


Step = Callable[[np.ndarray], tuple[np.ndarray, Transform]]


# --- helpers ------------------------------------------------------------------------------
#: pixel count of the grey thumbnail the page analyses run on (cost independent of scan size;
#: a 4961x7016 receipt scan keeps ~10 px glyphs).
ANALYSIS_PIXELS = 1_500_000


def thumbnail_scale(shape: tuple[int, ...], pixels: int = ANALYSIS_PIXELS) -> float:
    """The scale (<= 1) :func:`thumbnail` shrinks a page of ``shape`` ``(H, W)`` px by."""
    return min(1.0, float(np.sqrt(pixels / (shape[0] * shape[1]))))


def thumbnail(page: np.ndarray, pixels: int = ANALYSIS_PIXELS) -> tuple[np.ndarray, float]:
    """(grey ``(h, w)`` uint8 thumbnail of about ``pixels`` px, its scale vs the page).

    Area-averaged (``cv2.INTER_AREA``), never enlarged. The page is made grey first, so one channel
    is averaged instead of three (measured on the 60 SROIE dev pages: 16 -> 9.5 CPU-ms per thumbnail;
    a 4961x7016 scan ~200 -> ~150; grey levels within 1 of resizing first).
    """
    scale = thumbnail_scale(page.shape[:2], pixels)
    grey = cv2.cvtColor(page, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return grey, scale


#: local threshold for ink: a pixel is ink when darker than the mean of its INK_BLOCK x INK_BLOCK
#: neighbourhood minus INK_OFFSET grey levels (robust to dark borders and uneven light,
#: unlike one global Otsu threshold).
INK_BLOCK, INK_OFFSET = 31, 15


def ink_mask(grey: np.ndarray) -> np.ndarray:
    """Binary ``(h, w)`` uint8 mask (1 = ink, dark text on light paper) by a local mean threshold."""
    return cv2.adaptiveThreshold(grey, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV,
                                 INK_BLOCK, INK_OFFSET)


#: side of the square opened away from the ink mask before :func:`ink_fraction` counts it: 2 px
#: removes isolated noise pixels (a blank page with Gaussian noise sigma 10 grey levels: 0.8 % ink
#: before, 0.0003 % after) and keeps strokes (a 28 px text line on an A4 page: 0.08 % either way).
INK_OPEN_PX = 2


def ink_fraction(cleaned: np.ndarray) -> float:
    """Fraction in [0, 1] of a CLEANED page ``(H, W, 3)`` uint8 BGR that is ink: :func:`ink_mask`
    on the analysis :func:`thumbnail`, opened by an :data:`INK_OPEN_PX` square (no isolated
    specks). Measured (scripts in the issue-24 report): 60 SROIE receipt scans 1.0-19 % (median
    7.8 %); one 28 px text line on an A4 page 0.08 %; blank pages with Gaussian noise sigma <= 10
    grey levels (also as JPEG q50) <= 0.001 %; sigma 20: 0.2-0.3 %; all white and all black 0."""
    grey, _ = thumbnail(cleaned)
    return _ink_share(ink_mask(grey))


def _ink_share(mask: np.ndarray) -> float:
    """:func:`ink_fraction` of a thumbnail's :func:`ink_mask`."""
    return float(cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((INK_OPEN_PX, INK_OPEN_PX), np.uint8)).mean())


def _rotate(image: np.ndarray, angle_deg: float, *, interpolation: int = cv2.INTER_LINEAR,
            expand: bool = True, border: int = cv2.BORDER_REPLICATE) -> tuple[np.ndarray, np.ndarray]:
    """(image rotated counter-clockwise by ``angle_deg`` about its centre, ``(2, 3)`` matrix).

    ``expand`` grows the canvas so nothing is cut; new pixels replicate the border (``border``
    ``cv2.BORDER_CONSTANT``: zeros, for masks).
    """
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle_deg, 1.0)
    size = (w, h)
    if expand:
        cos, sin = abs(m[0, 0]), abs(m[0, 1])
        size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos)))
        m[0, 2] += (size[0] - w) / 2
        m[1, 2] += (size[1] - h) / 2
    return cv2.warpAffine(image, m, size, flags=interpolation, borderMode=border), m


# --- border -------------------------------------------------------------------------------
#: grey level below which a thumbnail pixel is "scanner background" (black lid/border);
#: receipt paper, even grey thermal paper, is far above it on the SROIE scans.
BORDER_DARK = 80
#: a thumbnail row/column is border when more than this fraction of it is dark.
BORDER_MIN_FRACTION = 0.5
#: trimming stops this far into the page (fraction of the side) whatever the profile says.
BORDER_MAX_TRIM = 0.45
#: paper kept around the cut (fraction of the long side), so tilted paper corners are not cut into text.
BORDER_MARGIN = 0.005


def _dark_run(profile: np.ndarray) -> int:
    """Length of the leading run of ``profile`` (dark fraction per row/column) above the limit."""
    limit = int(len(profile) * BORDER_MAX_TRIM)
    light = np.flatnonzero(profile[:limit] <= BORDER_MIN_FRACTION)
    return int(light[0]) if len(light) else limit


def remove_border(page: np.ndarray) -> tuple[np.ndarray, Transform]:
    """Crop a ``(H, W, 3)`` uint8 BGR page to the paper, dropping a dark scanner border.

    On a grey thumbnail, the rows and columns at each edge of which more than
    ``BORDER_MIN_FRACTION`` of the pixels are darker than ``BORDER_DARK`` are trimmed (up to
    ``BORDER_MAX_TRIM`` of the side), then ``BORDER_MARGIN`` of paper is given back. A border
    along only part of an edge (a receipt sticking out of it) stays. The crop is a view of ``page`` (no copy).
    Tesseract returned empty pages on two receipts with such a border; DBNet is robust to it
    but sees the paper larger once the border is gone. Returns (page, translation); an
    unchanged page and the identity when there is no border.
    """
    return _remove_border(page, *thumbnail(page))


def _remove_border(page: np.ndarray, grey: np.ndarray, scale: float) -> tuple[np.ndarray, Transform]:
    """:func:`remove_border` given the page's analysis :func:`thumbnail` (``grey`` at ``scale``)."""
    dark = (grey < BORDER_DARK).astype(np.float32)
    rows, cols = dark.mean(axis=1), dark.mean(axis=0)
    runs = [_dark_run(cols), _dark_run(cols[::-1]), _dark_run(rows), _dark_run(rows[::-1])]
    if not any(runs):
        return page, Transform.identity()
    h, w = page.shape[:2]
    margin = BORDER_MARGIN * max(h, w)
    left, right, top, bottom = (int(max(0.0, r / scale - margin)) for r in runs)
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    if x1 - x0 < 32 or y1 - y0 < 32:  # all dark: nothing that looks like paper, keep the page
        return page, Transform.identity()
    return page[y0:y1, x0:x1], Transform.from_affine([[1, 0, -x0], [0, 1, -y0]])


# --- downscale ----------------------------------------------------------------------------
#: long side (px) above which a scan is shrunk before detection: 1.7x the detector's own
#: ``detect_max_side`` (1536), so crops cut from the shrunk page keep receipt glyphs >= ~25 px
#: tall for the 48-px recogniser input (the 4961x7016 SROIE scans have ~50-px glyphs).
DOWNSCALE_MAX_SIDE = 2560


def downscale(page: np.ndarray, max_side: int = DOWNSCALE_MAX_SIDE) -> tuple[np.ndarray, Transform]:
    """Shrink a ``(H, W, 3)`` uint8 BGR page so that its long side is <= ``max_side`` px.

    ``cv2.INTER_AREA`` (pixel-area averaging, no aliasing; the detector's own resize is
    bilinear). Smaller pages are returned unchanged with the identity.
    """
    h, w = page.shape[:2]
    if max(h, w) <= max_side:
        return page, Transform.identity()
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    sx, sy = size[0] / w, size[1] / h
    small = cv2.resize(page, size, interpolation=cv2.INTER_AREA)
    # cv2.resize maps pixel centres: x' = (x + 0.5) * sx - 0.5
    return small, Transform.from_affine([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])


# --- orientation --------------------------------------------------------------------------
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
#: rapidocr ``config.yaml`` ``Cls``: input (3, 48, 192), labels ["0", "180"].
CLS_SHAPE = (3, 48, 192)
CLS_LABELS = ["0", "180"]
#: a line's direction counts when the classifier is this sure (rapidocr ``Cls.cls_thresh``).
CLS_THRESH = 0.9
#: at least this many glyph-sized components are needed to judge; fewer -> left as is.
MIN_GLYPHS = 20
#: text-line blobs sent to the direction classifier (the widest ones).
CLS_LINES = 16
#: a page skewed by at least this much is judged on its straightened glyph mask; below it the
#: horizontal line blobs hold (the SROIE scans, 0-2 degrees off, are judged as they are).
ORIENTATION_SKEW_DEG = 2.0
#: the skew search step (degrees) of the orientation decision: the glyph mask straightened to within
#: half of it keeps its text-line blobs (the 131 SROIE dev and kie receipts as they are and turned
#: 90/180/270, and 64 skewed and perspective copies each turned four ways: no decision wrong at 1.0,
#: as at 0.5 with the fine pass), with half the rotations (the decision: 59 -> 53 CPU-ms per page).
ORIENTATION_SKEW_STEP = 1.0


def rotate_quarters(page: np.ndarray, quarters: int) -> tuple[np.ndarray, Transform]:
    """``page`` turned clockwise by ``quarters`` x 90 degrees (``cv2.rotate``, exact) and its transform."""
    h, w = page.shape[:2]
    quarters %= 4
    if quarters == 0:
        return page, Transform.identity()
    code, m = {
        1: (cv2.ROTATE_90_CLOCKWISE, [[0, -1, h - 1], [1, 0, 0]]),
        2: (cv2.ROTATE_180, [[-1, 0, w - 1], [0, -1, h - 1]]),
        3: (cv2.ROTATE_90_COUNTERCLOCKWISE, [[0, 1, 0], [-1, 0, w - 1]]),
    }[quarters]
    return cv2.rotate(page, code), Transform.from_affine(m)


@dataclass(frozen=True)
class InkComponents:
    """The 8-connected components of an ink mask (``cv2.connectedComponentsWithStats``): ``labels``
    ``(h, w)`` int32 (0 = background), ``stats`` ``(n, 5)`` int32 rows [x, y, w, h, area] in mask px."""

    labels: np.ndarray
    stats: np.ndarray

    @classmethod
    def of(cls, ink: np.ndarray) -> InkComponents:
        """The components of a ``(h, w)`` uint8 0/1 mask."""
        _, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
        return cls(labels, stats)


def _glyphs(ink: np.ndarray, components: InkComponents | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(``(N, 3)`` int (width, height, area) of the glyph-sized connected components of an ink
    mask, ``(h, w)`` uint8 mask of only those components); ``components``: the mask's, when made.

    Glyph-sized: both sides >= 3 px, long side <= 5 % of the page's, area >= 8 px; this drops
    halftone dots, speckle, rules and photos.
    """
    found = components if components is not None else InkComponents.of(ink)
    labels, stats = found.labels, found.stats
    wha = stats[:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT, cv2.CC_STAT_AREA]]
    keep = ((wha[:, :2].min(axis=1) >= 3) & (wha[:, :2].max(axis=1) <= max(ink.shape) * 0.05)
            & (wha[:, 2] >= 8))
    keep[0] = False  # background
    return wha[keep], keep[labels].astype(np.uint8)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The value below which half of the total weight lies (``values``, ``weights``: ``(N,)``, N >= 1)."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order], dtype=np.float64)
    return float(values[order][int(np.searchsorted(cumulative, cumulative[-1] / 2))])


def text_size(glyphs: np.ndarray) -> tuple[float, float]:
    """(height, width) in px of the text of a page, from its :func:`_glyphs` ``(N, 3)`` (w, h, area):
    the medians weighted by component area, so that ink, not component count, decides.

    Plain medians are pulled down by the many small components of textured thermal paper and of
    faint print broken into pieces: on the 131 SROIE dev and kie receipts, DBNet's line boxes are
    1.6-2.7x the area-weighted median glyph height, but up to 6.7x the plain median (sroie_214,
    sroie_269: speckle; sroie_414: broken strokes), and text lines sized by the plain median were
    missed (only dashed rules remained), which turned upright receipts.
    """
    area = glyphs[:, 2]
    return _weighted_median(glyphs[:, 1], area), _weighted_median(glyphs[:, 0], area)


def glyph_height(page: np.ndarray) -> float | None:
    """Median height (page px) of the glyph-sized ink components of a ``(H, W, 3)`` uint8 BGR page,
    measured on its :func:`thumbnail`; None when fewer than :data:`MIN_GLYPHS` are found (a blank
    or photo-only page)."""
    grey, scale = thumbnail(page)
    glyphs, _ = _glyphs(ink_mask(grey))
    return _median_side(glyphs, scale, 1)


def _median_side(glyphs: np.ndarray, scale: float, axis: int) -> float | None:
    """Median width (``axis`` 0) or height (1) in page px of :func:`_glyphs` ``(N, 3)`` measured on
    a thumbnail at ``scale``; None below :data:`MIN_GLYPHS` components."""
    if len(glyphs) < MIN_GLYPHS:
        return None
    return float(np.median(glyphs[:, axis])) / scale


#: the line-blob search (:func:`_line_boxes`) runs on the glyph mask max-pooled by this factor per side
#: when its glyphs are at least :data:`LINE_POOL_MIN_GLYPH` px tall: the labelling of the joined mask
#: was 17 of the orientation step's ~50 CPU-ms per SROIE dev page, a quarter of the pixels a quarter of
#: that. Measured: the same decisions on the dev stream (``bench/bench_pages.py --stream``: 0/90 pages
#: judged wrong, every reading the same) and on the 131 dev and kie pages.
LINE_POOL, LINE_POOL_MIN_GLYPH = 2, 8.0


def _line_boxes(ink: np.ndarray, glyph_height: float) -> np.ndarray:
    """``(N, 4)`` [x, y, w, h] of horizontal text-line blobs of a ``(h, w)`` 0/1 glyph mask, in its
    px, widest first.

    Glyphs are joined by a morphological closing with a ``glyph_height``-wide horizontal
    segment; blobs 0.6-2.5 glyph heights tall and at least 4x as wide as tall are lines. The mask
    is max-pooled by :data:`LINE_POOL` first when its glyphs are tall enough (boxes to within that).
    """
    pool = LINE_POOL if glyph_height >= LINE_POOL_MIN_GLYPH else 1
    if pool > 1:  # max-pooling: the pool x pool maximum at every pixel, then every pool-th one
        ink = np.ascontiguousarray(cv2.dilate(ink, np.ones((pool, pool), np.uint8), anchor=(0, 0))[::pool, ::pool])
    k = max(3, round(glyph_height / pool))
    closed = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, 1)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    boxes = stats[1:, :4] * pool
    w, h = boxes[:, 2], boxes[:, 3]
    lines = boxes[(h >= 0.6 * glyph_height) & (h <= 2.5 * glyph_height) & (w >= 4 * h)]
    return lines[np.argsort(-lines[:, 2], kind="stable")]


def _line_length(boxes: np.ndarray, ink: np.ndarray) -> float:
    """Total length of the text-line blobs ``boxes`` (:func:`_line_boxes` of ``ink``), in page widths."""
    return float(boxes[:, 2].sum()) / int(ink.shape[1])


@lru_cache(maxsize=1)
def _direction_classifier() -> ort.InferenceSession:
    return make_session(rapidocr_model(CLS_MODEL), device="cpu")


def upside_down_probability(crops: Sequence[np.ndarray]) -> np.ndarray:
    """P("180") per line crop ``(h, w, 3)`` uint8 BGR, by the PP-OCR text-direction classifier.

    Pre-processing is rapidocr's ``TextClassifier.resize_norm_img`` (height 48, width <= 192,
    ``(x / 255 - 0.5) / 0.5``, zero padding); the model's output is already softmaxed.
    Returns ``(N,)`` float32.
    """
    if not len(crops):
        return np.zeros(0, dtype=np.float32)
    # a stand-in ``self``: resize_norm_img reads only ``self.cls_image_shape``
    shape = cast(TextClassifier, SimpleNamespace(cls_image_shape=list(CLS_SHAPE)))
    batch = np.stack([TextClassifier.resize_norm_img(shape, c) for c in crops]).astype(np.float32)
    session = _direction_classifier()
    probs: np.ndarray = session.run(None, {session.get_inputs()[0].name: batch})[0]
    return probs[:, CLS_LABELS.index("180")].astype(np.float32)


def _line_crops(page: np.ndarray, boxes: np.ndarray, scale: float) -> list[np.ndarray]:
    """Full-resolution crops of thumbnail line boxes ``[x, y, w, h]`` (margin 0.25 h)."""
    crops = []
    for x, y, w, h in boxes[:CLS_LINES] / scale:
        m = 0.25 * h
        y0, y1 = int(max(0, y - m)), int(min(page.shape[0], y + h + m))
        x0, x1 = int(max(0, x - m)), int(min(page.shape[1], x + w + m))
        crops.append(page[y0:y1, x0:x1])
    return crops


def _warped_line_crops(page: np.ndarray, boxes: np.ndarray, frame: Transform) -> list[np.ndarray]:
    """Full-resolution crops of line boxes ``[x, y, w, h]`` of a turned analysis frame
    (``frame``: page px -> frame px), each cut along its line (margin 0.25 h; rapidocr's
    ``get_rotate_crop_image``), so it reads as it runs in the frame."""
    crops = []
    for x, y, w, h in boxes[:CLS_LINES].astype(np.float64):
        m = 0.25 * h
        quad = np.array([[x - m, y - m], [x + w + m, y - m], [x + w + m, y + h + m], [x - m, y + h + m]])
        crops.append(get_rotate_crop_image(page, frame.to_original(quad)))
    return crops


def _upside_down_vote(crops: Sequence[np.ndarray]) -> bool:
    """Page vote of the direction classifier: more lines confidently "180" than confidently "0"."""
    p180 = upside_down_probability(crops)
    return int((p180 > CLS_THRESH).sum()) > int((p180 < 1 - CLS_THRESH).sum())


def page_orientation(page: np.ndarray) -> int:
    """Clockwise quarter turns (0-3) that put a ``(H, W, 3)`` uint8 BGR page upright.

    0. A skewed page (:func:`mask_skew` of the glyph mask of the thumbnail, at least
       ``ORIENTATION_SKEW_DEG``) is judged on its glyph mask turned straight (the page itself is not
       resampled: a phone photo 4-15 degrees off broke the horizontal line blobs below, and
       judged skewed receipts sideways).
    1. Sideways (90/270) when text-line blobs (:func:`_line_boxes`, joined and sized by the
       :func:`text_size` of the glyphs) are longer in total on
       the page turned by 90 degrees than on the page as it is (on 60 real receipts and their
       90-degree turns the right frame has 1.5-70x the line length of the wrong one).
    2. On the page turned so its lines run horizontally, the ``CLS_LINES`` widest line
       blobs are read by the PP-OCR direction classifier (PaddleOCR's angle classifier,
       0/180 per line); the page is upside down when more lines are confidently "180" than
       confidently "0" (confidence ``CLS_THRESH``).

    Pages with fewer than ``MIN_GLYPHS`` glyph-sized components are judged upright.
    """
    return _orient(page)[0]


def _orient(page: np.ndarray, thumb: tuple[np.ndarray, float] | None = None
            ) -> tuple[int, float | None, np.ndarray, InkComponents]:
    """(:func:`page_orientation`, :func:`glyph_height` of the page once turned by it, the
    :func:`ink_mask` of its thumbnail, that mask's :class:`InkComponents`): the glyphs the decision
    measured also give the turned page's median glyph height (their widths when it turns by a
    quarter), and the mask its share of ink (a quarter turn moves no pixel's value), which the
    detector and the review flag would otherwise measure again (14 and ~12 CPU-ms per page), and
    its components the colon search's (~8). ``thumb``: the page's :func:`thumbnail` when the caller
    has it (:func:`clean`: the border step's, when it left the page as it was)."""
    grey, scale = thumb if thumb is not None else thumbnail(page)
    mask = ink_mask(grey)
    components = InkComponents.of(mask)
    glyphs, ink = _glyphs(mask, components)
    if len(glyphs) < MIN_GLYPHS:
        return 0, None, mask, components
    quarters = _decide(page, glyphs, ink, scale)
    return quarters, _median_side(glyphs, scale, 1 if quarters % 2 == 0 else 0), mask, components


def _decide(page: np.ndarray, glyphs: np.ndarray, ink: np.ndarray, scale: float) -> int:
    """:func:`page_orientation`'s decision from the page's glyphs (:func:`_glyphs` of its thumbnail
    at ``scale``; at least :data:`MIN_GLYPHS`)."""
    height, width = text_size(glyphs)
    frame = None  # page px -> analysis frame px, when the frame is not the page's own axes
    skew = mask_skew(ink, fine=False, coarse_step=ORIENTATION_SKEW_STEP)
    if abs(skew) >= ORIENTATION_SKEW_DEG:
        ink, m = _rotate(ink, -skew, interpolation=cv2.INTER_NEAREST, border=cv2.BORDER_CONSTANT)
        frame = Transform.from_affine([[scale, 0, 0], [0, scale, 0]]).then(Transform.from_affine(m))
    turned_ink, turn = rotate_quarters(ink, 1)  # clockwise
    boxes, turned_boxes = _line_boxes(ink, height), _line_boxes(turned_ink, width)
    quarters = 1 if _line_length(turned_boxes, turned_ink) > _line_length(boxes, ink) else 0
    if quarters:
        ink, boxes = turned_ink, turned_boxes
    if frame is None:
        crops = _line_crops(rotate_quarters(page, quarters)[0], boxes, scale)
    else:
        crops = _warped_line_crops(page, boxes, frame.then(turn) if quarters else frame)
    return quarters + 2 if _upside_down_vote(crops) else quarters


def orientation(page: np.ndarray) -> tuple[np.ndarray, Transform]:
    """Turn a ``(H, W, 3)`` uint8 BGR page upright (:func:`page_orientation`); (page, transform)."""
    return rotate_quarters(page, page_orientation(page))


@dataclass
class Cleaned:
    """A page after :func:`clean`: ``page`` ``(H', W', 3)`` uint8 BGR, ``transform`` original ->
    cleaned px, and what a step measured on the way (the orientation step does), else None:
    ``glyph_height``, the cleaned page's median glyph height in px (else measure it:
    :func:`glyph_height`), ``ink``, its :func:`ink_fraction`, and ``ink_mask``, the ``(h, w)`` uint8
    :func:`ink_mask` of its analysis :func:`thumbnail` (the orientation step's, turned with the page:
    a quarter turn moves no pixel's value), which :func:`ocrstream.ocr.detection.attach_colons`
    would otherwise make again, and ``ink_components``, that mask's :class:`InkComponents` when the
    page was not turned (the colon search labels the same mask)."""

    page: np.ndarray
    transform: Transform
    glyph_height: float | None = None
    ink: float | None = None
    ink_mask: np.ndarray | None = None
    ink_components: InkComponents | None = None


# --- deskew -------------------------------------------------------------------------------
#: the skew search covers +-MAX_SKEW_DEG: a receipt laid askew on a scanner or photographed by
#: hand is off by up to ~15 degrees (issue 20's dev stream skews 4-15); larger turns are the
#: orientation step's quarter turns or layout, not skew.
MAX_SKEW_DEG = 15.0
#: coarse and fine search steps (degrees); the result has a resolution of SKEW_FINE_STEP.
SKEW_COARSE_STEP, SKEW_FINE_STEP = 0.5, 0.1
#: pages skewed less than this are left alone (no resampling blur for nothing).
MIN_SKEW_DEG = 0.3
#: thumbnail pixel count for the search, and of the mask its coarse pass runs on (about 1/3 of
#: the receipt's glyph height: lines stay apart at the coarse step's resolution).
SKEW_PIXELS, SKEW_COARSE_PIXELS = 500_000, 150_000


def _sharpness(ink: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Postl's criterion for each of ``angles`` ``(K,)`` (degrees, counter-clockwise, about the centre
    of the ``(h, w)`` 0/1 mask ``ink``, on its own canvas): the sum of squared differences of adjacent
    row sums of the turned ink, ``(K,)`` float64.

    The ink pixels are turned as points, each to its nearest row (forward mapping), instead of
    resampling the image once per angle (``cv2.warpAffine``, nearest neighbour): measured on the
    524 glyph masks of the 131 SROIE dev and kie pages as they are, turned a quarter and skewed 7
    degrees more, 9.7 against 34 CPU-ms per orientation search, the same coarse angle on 521 and one
    1-degree step apart on 3 (A4 scans turned 7 degrees: 7 or 9 against 8).
    """
    h, w = ink.shape
    ys, xs = np.nonzero(ink)
    x, y = xs - (w - 1) / 2.0, ys - (h - 1) / 2.0
    out = np.zeros(len(angles))
    for k, angle in enumerate(np.radians(angles)):
        sin, cos = np.sin(angle), np.cos(angle)
        rows = np.rint(cos * y - sin * x + (h - 1) / 2.0).astype(np.intp)
        cols = np.rint(cos * x + sin * y + (w - 1) / 2.0)
        kept = rows[(rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)]
        out[k] = np.sum(np.diff(np.bincount(kept, minlength=h).astype(np.float64)) ** 2)
    return out


def _best_angle(ink: np.ndarray, angles: np.ndarray) -> float:
    return float(angles[int(np.argmax(_sharpness(ink, angles)))])


def estimate_skew(page: np.ndarray) -> float:
    """Counter-clockwise skew (degrees, within +-``MAX_SKEW_DEG``) of the text lines of a page.

    Projection-profile search (W. Postl, "Detection of linear oblique structures and skew
    scan in digitized documents", ICPR 1986; the same criterion as Leptonica's
    ``pixFindSkewSweep``) on the glyph mask (:func:`_glyphs`) of a ``SKEW_PIXELS`` thumbnail:
    :func:`mask_skew`. Input ``(H, W, 3)`` uint8 BGR.
    """
    grey, _ = thumbnail(page, SKEW_PIXELS)
    _, ink = _glyphs(ink_mask(grey))
    return mask_skew(ink)


def _shrunk(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A 0/1 uint8 mask area-averaged down to about ``pixels`` px (a pixel is ink when at least
    half its area was); unchanged when already that small."""
    shrink = min(1.0, float(np.sqrt(pixels / mask.size)))
    return cv2.resize(mask, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1.0 else mask


def mask_skew(ink: np.ndarray, *, fine: bool = True, coarse_step: float = SKEW_COARSE_STEP) -> float:
    """Counter-clockwise skew (degrees, within +-``MAX_SKEW_DEG``) of the text lines of a
    ``(h, w)`` uint8 0/1 glyph mask: the rotation whose row-sum profile has the largest sum of
    squared adjacent differences (Postl's criterion).

    Coarse search every ``SKEW_COARSE_STEP`` degrees on the mask shrunk to about
    ``SKEW_COARSE_PIXELS`` (area average, >= half ink; the fine search on at most
    ``SKEW_PIXELS``), on the mask as it is and turned by 90
    degrees, keeping the sharper of the two: a page turned sideways (lines running up or down)
    gets its skew too (a rotation by an angle is the same rotation in either frame), so that
    ``orientation`` can judge it; then a ``SKEW_FINE_STEP`` search within one coarse step on
    the full mask in the chosen frame (``fine=False``: the coarse angle, to ``coarse_step``
    degrees, default ``SKEW_COARSE_STEP``; :func:`page_orientation` asks only whether the page is
    skewed, and straightens its glyph mask to within :data:`ORIENTATION_SKEW_STEP`).
    """
    if not ink.any():
        return 0.0
    ink = _shrunk(ink, SKEW_PIXELS)
    small = _shrunk(ink, SKEW_COARSE_PIXELS)
    coarse = np.arange(-MAX_SKEW_DEG, MAX_SKEW_DEG + 1e-9, coarse_step)
    frames = [small, np.ascontiguousarray(np.rot90(small, -1))]  # as it is, and turned a quarter
    sharpness = [_sharpness(frame, coarse) for frame in frames]
    sideways = int(np.argmax([max(row) for row in sharpness]))
    best = float(coarse[int(np.argmax(sharpness[sideways]))])
    if not fine:
        return -best
    steps = best + np.arange(-SKEW_COARSE_STEP, SKEW_COARSE_STEP + 1e-9, SKEW_FINE_STEP)
    full = np.ascontiguousarray(np.rot90(ink, -1)) if sideways else ink
    return -_best_angle(full, steps[np.abs(steps) <= MAX_SKEW_DEG])


def deskew(page: np.ndarray) -> tuple[np.ndarray, Transform]:
    """Rotate a ``(H, W, 3)`` uint8 BGR page so its text lines are horizontal.

    Skew from :func:`estimate_skew`; below ``MIN_SKEW_DEG`` the page is returned unchanged.
    Bilinear resampling on a canvas grown to keep every pixel, replicated border.
    """
    skew = estimate_skew(page)
    if abs(skew) < MIN_SKEW_DEG:
        return page, Transform.identity()
    rotated, m = _rotate(page, -skew)
    return rotated, Transform.from_affine(m)


# --- pixel-only steps ---------------------------------------------------------------------
#: median filter aperture (px).
DENOISE_KERNEL = 3
#: CLAHE settings: OpenCV's tutorial values (clip limit 2.0, 8x8 tiles).
CLAHE_CLIP, CLAHE_TILES = 2.0, (8, 8)


def denoise(page: np.ndarray) -> tuple[np.ndarray, Transform]:
    """``DENOISE_KERNEL`` median filter of a ``(H, W, 3)`` uint8 BGR page (``cv2.medianBlur``)."""
    return cv2.medianBlur(page, DENOISE_KERNEL), Transform.identity()


def contrast(page: np.ndarray) -> tuple[np.ndarray, Transform]:
    """CLAHE (Zuiderveld, Graphics Gems IV, 1994; ``cv2.createCLAHE``) on the L channel of L*a*b*.

    Input and output ``(H, W, 3)`` uint8 BGR.
    """
    lab = cv2.cvtColor(page, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=CLAHE_TILES)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), Transform.identity()


# --- registry -----------------------------------------------------------------------------
#: every step, in the order :func:`apply` runs them.
STEPS: dict[str, Step] = {
    "border": remove_border,
    "downscale": downscale,
    "deskew": deskew,  # before orientation: its line blobs need straight lines (bench_pages --stream)
    "orientation": orientation,
    "denoise": denoise,
    "contrast": contrast,
}
#: the combination that wins on the dev stream (bench_pages --stream --ablation, issue 20: the 60
#: SROIE dev receipts upright plus 15 of them turned 90/180/270, 11 skewed 4-15 degrees, 4 skewed
#: and in perspective; CER ci of those pages, and in brackets of the same receipts upright):
#:   border                     upright 2.94 %, turned 77.26 (2.87), skewed 2.53 (2.32), persp. 3.98 (3.95)
#:   border,orientation         upright 2.94 %, turned  2.85 (2.87), skewed 2.53 (2.32), persp. 3.98 (3.95)
#:   border,deskew,orientation  upright 3.04 %, turned  2.92 (2.94), skewed 2.44 (2.34), persp. 4.47 (3.95)
#: ``orientation`` puts turned pages within 0.1 point of upright and changes no upright reading
#: (+81 CPU-ms per upright page, 9 %); skewed pages need no resampling once lines are assembled
#: in the page's own frame (:func:`ocrstream.ocr.detection.visual_lines`), and ``deskew`` costs
#: upright and perspective pages CER. Earlier, on upright receipts only: ``border`` is the only
#: step that helps both page CER and WER (2.97 -> 2.94 %, 12.32 -> 12.31 %) and it is cheap
#: (~10 CPU-ms); ``downscale`` changes nothing on <= 7016-px scans; denoise (4.98 %) and
#: contrast (3.17 %) hurt.
DEFAULT_STEPS: tuple[str, ...] = ("border", "orientation")


def parse_steps(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Step names from a comma list (``"border, deskew"``; ``""`` = none) or a sequence.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"unknown clean-up step(s) {unknown}; known: {', '.join(STEPS)}")
    return tuple(names)


def apply(page: np.ndarray, steps: Sequence[str] | str = DEFAULT_STEPS) -> tuple[np.ndarray, Transform]:
    """Clean a ``(H, W, 3)`` uint8 BGR page with ``steps`` (run in :data:`STEPS` order).

    Returns (cleaned page ``(H', W', 3)`` uint8 BGR, transform original -> cleaned px).

    Raises:
        ValueError: an unknown step name (the message lists the known ones), or a page
            that is not ``(H, W, 3)``.
    """
    cleaned = clean(page, steps)
    return cleaned.page, cleaned.transform


def clean(page: np.ndarray, steps: Sequence[str] | str = DEFAULT_STEPS) -> Cleaned:
    """:func:`apply`, with what the steps measured on the way (:class:`Cleaned`). Same errors."""
    wanted = set(parse_steps(steps))
    if page.ndim != 3 or page.shape[2] != 3:
        raise ValueError(f"page must be (H, W, 3) uint8 BGR, got shape {page.shape}")
    transform, height, ink = Transform.identity(), None, None
    mask: np.ndarray | None = None
    components: InkComponents | None = None
    thumb: tuple[np.ndarray, float] | None = None  # the current page's thumbnail, when a step made it
    for name, step in STEPS.items():
        if name not in wanted:
            continue
        if name == "border":  # its thumbnail serves the orientation step too when no border was cut:
            grey_scale = thumbnail(page)  # a second costs 16 CPU-ms per SROIE dev page (A4 scans: ~200)
            trimmed, moved = _remove_border(page, *grey_scale)
            thumb = grey_scale if trimmed is page else None  # (a cut at the bottom or right moves no pixel)
            page = trimmed
        elif name == "orientation":
            quarters, height, mask, components = _orient(page, thumb)
            ink = _ink_share(mask)
            page, moved = rotate_quarters(page, quarters)
            mask, thumb = rotate_quarters(mask, quarters)[0], None
            components = components if quarters == 0 else None  # labels of the unturned mask
        else:
            page, moved = step(page)
            ink, mask, thumb, components = None, None, None, None  # measured before the page's pixels changed
            if not moved.is_identity:
                height = None  # measured before the page moved
        transform = transform.then(moved)
    return Cleaned(page, transform, height, ink, mask, components)

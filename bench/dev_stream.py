"""A seeded dev stream that looks like users' streams, made from the SROIE dev receipts.

Every dev page upright (kind ``upright``), plus copies of some of them as a real stream holds
them (issue 20): a quarter of the pages turned by 90, 180 or 270 degrees clockwise (kind
``turned``, as a scan fed sideways or a photo taken upside down), another quarter skewed by
4-15 degrees either way (kind ``skewed``, a receipt laid askew on a scanner or photographed),
a few of those also in perspective (kind ``perspective``: the four corners moved by up to
``PERSPECTIVE_JITTER`` of the side, a phone held at an angle). The turned/skewed copies are
scored against the same ground truth as their upright page, so "within X of upright" compares
the same receipts.

    from bench.dev_stream import make_stream
    stream = make_stream(records, data_dir, seed=20)   # [StreamPage, ...]

Copies are JPEG (quality ``JPEG_QUALITY``, as phones and scanners write them); skewed copies
are rotated with a canvas grown to hold the whole page, the new area filled with light grey
``FILL`` (a table or scanner lid lighter than the border step's dark threshold). Nothing here
is keyed to a receipt: the pages for each kind are drawn by ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["KINDS", "StreamPage", "make_stream", "skew", "perspective", "turn"]

KINDS = ("upright", "turned", "skewed", "perspective")
#: skew angles drawn uniformly from this range (degrees), sign random.
SKEW_RANGE = (4.0, 15.0)
#: perspective copies: each corner moves inward by up to this fraction of the page side.
PERSPECTIVE_JITTER = 0.06
#: of the skewed quarter, this many pages are (also) put in perspective.
N_PERSPECTIVE = 4
JPEG_QUALITY = 90
FILL = (200, 200, 200)


@dataclass(frozen=True)
class StreamPage:
    """One page of the stream: ``data`` (encoded image bytes), its ``kind`` (:data:`KINDS`),
    ``detail`` (e.g. ``"90"`` or ``"-7.3 deg"``), the dev ``record`` it was made from."""

    data: bytes
    kind: str
    detail: str
    record: dict

    @property
    def id(self) -> str:
        return f"{self.record['id']}:{self.kind}:{self.detail}"


def turn(page: np.ndarray, degrees: int) -> np.ndarray:
    """``page`` (H, W, 3) uint8 turned clockwise by 90, 180 or 270 degrees (exact)."""
    codes = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return cv2.rotate(page, codes[degrees])


def skew(page: np.ndarray, degrees: float) -> np.ndarray:
    """``page`` rotated counter-clockwise by ``degrees`` on a grown canvas filled with :data:`FILL`."""
    h, w = page.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos)))
    m[0, 2] += (size[0] - w) / 2
    m[1, 2] += (size[1] - h) / 2
    return cv2.warpAffine(page, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)


def perspective(page: np.ndarray, rng: random.Random) -> np.ndarray:
    """``page`` warped so each corner moves inward by up to :data:`PERSPECTIVE_JITTER` of the side."""
    h, w = page.shape[:2]
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    signs = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    jitter = np.float32([[rng.uniform(0, PERSPECTIVE_JITTER) * w, rng.uniform(0, PERSPECTIVE_JITTER) * h]
                         for _ in range(4)])
    m = cv2.getPerspectiveTransform(src, src + signs * jitter)
    return cv2.warpPerspective(page, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=FILL)


def _jpeg(page: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", page, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return buf.tobytes()


def make_stream(records: list[dict], data_dir: Path, seed: int = 20) -> list[StreamPage]:
    """The stream: every record upright (its own bytes), then the turned, skewed and perspective copies.

    A quarter of the records (drawn with ``seed``) are turned, cycling 90/180/270; another
    quarter are skewed by an angle from :data:`SKEW_RANGE` (random sign), the first
    :data:`N_PERSPECTIVE` of them also warped in perspective (kind ``perspective``).
    """
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    quarter = len(records) // 4
    turned, skewed = order[:quarter], order[quarter:2 * quarter]
    stream = [StreamPage((data_dir / r["image"]).read_bytes(), "upright", "0", r) for r in records]
    for n, i in enumerate(turned):
        page = cv2.imread(str(data_dir / records[i]["image"]), cv2.IMREAD_COLOR)
        degrees = (90, 180, 270)[n % 3]
        stream.append(StreamPage(_jpeg(turn(page, degrees)), "turned", str(degrees), records[i]))
    for n, i in enumerate(skewed):
        page = cv2.imread(str(data_dir / records[i]["image"]), cv2.IMREAD_COLOR)
        angle = rng.uniform(*SKEW_RANGE) * rng.choice((-1, 1))
        kind = "perspective" if n < N_PERSPECTIVE else "skewed"
        if kind == "perspective":
            page = perspective(page, rng)
        stream.append(StreamPage(_jpeg(skew(page, angle)), kind, f"{angle:+.1f}deg", records[i]))
    return stream

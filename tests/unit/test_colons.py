"""The colon search's dot pairs: found by binary search and cells, exactly as the plain O(N^2) definition."""

import numpy as np
import pytest

from ocrstream.ocr import detection
from ocrstream.ocr.detection import COLON_GAP, _colons

pytestmark = pytest.mark.unit


def plain_colons(dots: np.ndarray, line_height: float) -> list[np.ndarray]:
    """The definition, every dot against every other (the code before issue 22's thirteenth session)."""
    centres, sizes = (dots[:, :2] + dots[:, 2:]) / 2, dots[:, 2:] - dots[:, :2]
    found = []
    for i, (x, y) in enumerate(centres):
        dx, dy = np.abs(centres[:, 0] - x), (centres[:, 1] - y) / line_height
        below = (dx <= np.maximum(sizes[:, 0], sizes[i, 0])) & (dy >= COLON_GAP[0]) & (dy <= COLON_GAP[1])
        for j in np.flatnonzero(below):
            alike = np.all(np.maximum(sizes[i], sizes[j]) <= 2 * np.minimum(sizes[i], sizes[j]))
            middle = (centres[i] + centres[j]) / 2
            crowd = np.count_nonzero(np.all(np.abs(centres - middle) <= line_height / 2, axis=1))
            if alike and crowd == 2:
                found.append(np.concatenate([np.minimum(dots[i, :2], dots[j, :2]),
                                             np.maximum(dots[i, 2:], dots[j, 2:])]))
    return found


def speckle(rng: np.random.Generator, n: int, side: float, line_height: float) -> np.ndarray:
    """``n`` dot boxes (x0, y0, x1, y1) scattered over a ``side`` px square, a third of them in colon
    pairs, some on whole-pixel positions (ties at the searches' bounds)."""
    xy = rng.uniform(0, side, (n, 2))
    xy[: n // 3: 2] = np.round(xy[: n // 3: 2])
    pairs = xy[: n // 3].copy()
    pairs[:, 1] += rng.uniform(0.1, 0.7, len(pairs)) * line_height
    centres = np.concatenate([xy, pairs])
    size = rng.uniform(2, 7, (len(centres), 2))
    return np.concatenate([centres - size / 2, centres + size / 2], axis=1)


@pytest.mark.parametrize("n, side, has_colons", [(0, 100.0, False), (1, 100.0, False), (40, 200.0, True),
                                                 (600, 400.0, True), (2500, 2000.0, True),
                                                 (2500, 300.0, False)])  # dense speckle: no dot pair alone
def test_colon_pairs_are_those_of_the_plain_definition(n, side, has_colons):
    rng = np.random.default_rng(n)
    dots = speckle(rng, n, side, 30.0)
    ours, plain = _colons(dots, 30.0), plain_colons(dots, 30.0)
    assert len(ours) == len(plain) and all(np.array_equal(a, b) for a, b in zip(ours, plain))
    assert bool(plain) == has_colons


def test_a_search_over_its_candidate_bound_goes_in_chunks_with_the_same_answer(monkeypatch):
    dots = speckle(np.random.default_rng(7), 800, 250.0, 30.0)
    whole = _colons(dots, 30.0)
    monkeypatch.setattr(detection, "COLON_CANDIDATES", 5)  # far below one query's candidates
    chunks = list(detection._near(np.arange(50.0), np.arange(50.0) - 3, np.arange(50.0) + 3))
    assert len(chunks) > 10 and max(len(q) for q, _ in chunks) <= 7  # a query's own candidates at most
    chunked = _colons(dots, 30.0)
    assert len(chunked) == len(whole) and all(np.array_equal(a, b) for a, b in zip(chunked, whole))

"""Blocks: consecutive visual lines of a page grouped into paragraphs by vertical whitespace.

A visual line (regions sharing a ``line_index``) joins the current block unless the gap between
its top and the previous line's bottom exceeds ``gap_factor`` x the page's median region height
(``BLOCK_GAP_FACTOR`` = 1.0: receipts set sections apart with about one empty line; the body's
line spacing leaves gaps of roughly 0.3-0.6 line heights). Reading order is not changed:
receipts print label and value of one row far apart, so splitting the page into columns would
separate them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLOCK_GAP_FACTOR = 1.0


def block_ids(boxes: Sequence[Sequence[float]], line_ids: Sequence[int],
              gap_factor: float = BLOCK_GAP_FACTOR) -> list[int]:
    """Block number of each region (0 = top block), given regions in reading order.

    ``boxes`` are ``[x0, y0, x1, y1]`` in page pixels, ``line_ids`` their visual-line numbers
    (non-decreasing in reading order, as :func:`ocrstream.ocr.detection.visual_line_ids`).
    """
    if not boxes:
        return []
    b = np.asarray(boxes, dtype=float)
    height = float(np.median(b[:, 3] - b[:, 1]))
    lines = np.asarray(line_ids)
    block_of_line: dict[int, int] = {}
    block, prev_bottom = 0, None
    for line in dict.fromkeys(line_ids):  # visual lines in reading order
        members = b[lines == line]
        top, bottom = float(members[:, 1].min()), float(members[:, 3].max())
        if prev_bottom is not None and top - prev_bottom > gap_factor * height:
            block += 1
        block_of_line[line] = block
        prev_bottom = bottom
    return [block_of_line[line] for line in line_ids]

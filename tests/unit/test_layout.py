"""Blocks from vertical whitespace (ocrstream/ocr/layout.py)."""

from __future__ import annotations


def test_blocks_split_on_vertical_whitespace_only():
    from ocrstream.ocr.layout import block_ids

    # line 0: two regions (label, value); line 1 just below; line 2 after a two-line gap
    boxes = [[10, 10, 100, 30], [300, 11, 380, 31], [10, 40, 120, 60], [10, 110, 90, 130]]
    assert block_ids(boxes, [0, 0, 1, 2]) == [0, 0, 0, 1]
    assert block_ids(boxes, [0, 0, 1, 2], gap_factor=5) == [0, 0, 0, 0]
    assert block_ids([], []) == []

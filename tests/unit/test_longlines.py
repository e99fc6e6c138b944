"""The crop budget shared by every recogniser (ocrstream/ocr/recognition/longlines.py).

docTR's merge rules on its own test cases; the budget on real PP-OCRv6 readings of lines rendered
here with Pillow's bundled font: long lines split and merged, hostile crops (20000x3 px, 1 px)
read with bounded tensors, readings cut to the character limit, normal lines untouched.
"""

from __future__ import annotations

import numpy as np
import pytest

from ocrstream.ocr.evaluation import cer
from ocrstream.ocr.recognition.longlines import (
    CropBudget,
    as_bgr,
    merge_chunk_texts,
    merge_strings_at,
    read_within_budget,
    split_wide_crop,
)
from ocrstream.ocr.recognition.ppocr import MAX_RATIO, REC_HEIGHT, PPOCRRecognizer, resized_width
from ocrstream.ocr.recognition.recognizer import EMPTY_READING, LineReading
from ocrstream.training.trocr_export import render_lines

LINE = "TOTAL INCL. GST 25.50 CASH 50.00"
LONG_LINE = "   ".join(["MILK 1L 2 X 6.90 13.80", "WHOLEMEAL BREAD 1 X 4.50 4.50", "EGGS GRADE A 10 1 X 7.20",
                        "TOTAL INCL. GST 25.50", "CASH 50.00 CHANGE 24.50"])


# expected merges of docTR's tests/common/test_models_recognition_utils.py (X = a cut character)
DOCTR_MERGES = [
    ("abcX", "Xdef", 0.25, "abcdef"), ("abcdX", "Xdef", 0.75, "abcdef"), ("abcdeX", "Xdef", 0.9, "abcdef"),
    ("abcdefX", "Xdef", 0.9, "abcdef"), ("abccccX", "Xcccccc", 0.4, "abcccccccc"), ("abc", "", 0.5, "abc"),
    ("", "abc", 0.5, "abc"), ("abcd", "cdefgh", 0.33, "abcdefgh"), ("abcdi", "cdefgh", 0.5, "abcdefgh"),
    ("abcdX", "Xefghi", 0.33, "abcdefghi"), ("bcdX", "Xefgh", 0.4, "bcdefgh"), ("cdX", "Xefg", 0.5, "cdefg"),
    ("abcdX", "Xbcde", 1.0, "abcde"), ("ababX", "Xabde", 0.8, "ababde"), ("ababX", "Xabab", 0.8, "ababab"),
    ("abaX", "Xbab", 1.0, "abab"), ("ababX", "Xabab", 1.0, "abab"), ("cabababX", "Xabababc", 0.5, "cabababababc"),
    ("abababX", "Xababab", 1.0, "ababab"), ("one_differon", "ferent_letter", 0.5, "one_differont_letter"),
]


@pytest.mark.parametrize("a, b, ratio, merged", DOCTR_MERGES)
def test_merge_strings_matches_doctr(a, b, ratio, merged):
    n_a, skip = merge_strings_at(a, b, ratio)
    assert a[:n_a] + b[skip:] == merged


@pytest.mark.parametrize("parts, ratio, last, merged", [
    (["abcX", "Xdef"], 0.25, 0.25, "abcdef"),
    (["abcdX", "XdefX", "XefghX", "Xijk"], 0.5, 0.5, "abcdefghijk"),
    (["abcdX", "XdefX", "XefghiX", "Xaijk"], 0.5, 0.8, "abcdefghijk"),
    (["abc", "bcdef", "difghi", "aijkl"], 0.5, 0.1, "abcdefghijkl"),
])
def test_merge_multi_strings_matches_doctr(parts, ratio, last, merged):
    chunks = [(p, [k / 10] * len(p), [10.0 * k + i for i in range(len(p))]) for k, p in enumerate(parts)]
    text, probs, xs = merge_chunk_texts(chunks, ratio, last)
    assert text == merged and len(probs) == len(xs) == len(text)
    assert probs[0] == 0.0 and probs[-1] == (len(parts) - 1) / 10  # payloads follow their characters


def test_split_wide_crop_geometry():
    crop = np.zeros((20, 500, 3), np.uint8)
    chunks, starts, last = split_wide_crop(crop)  # 500 / 20 = 25 > 8: chunks of 120 px, step 60
    assert [c.shape[1] for c in chunks] == [120] * len(chunks)
    assert starts[:3] == [0, 60, 120] and starts[-1] == 380 and 0 < last <= 1
    covered = np.zeros(500, bool)
    for s in starts:
        covered[s : s + 120] = True
    assert covered.all()
    assert split_wide_crop(np.zeros((20, 150, 3), np.uint8))[1] == [0]  # ratio 7.5: not split



def test_as_bgr_accepts_grey_bgra_and_empty():
    assert as_bgr(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert as_bgr(np.zeros((0, 5, 4), np.uint8)).shape == (0, 5, 3)
    with pytest.raises(ValueError, match="crop must be"):
        as_bgr(np.zeros((4, 5, 2), np.uint8))


def test_budget_rejects_impossible_settings():
    with pytest.raises(ValueError, match="overlap_ratio"):
        CropBudget(overlap_ratio=1.0)
    with pytest.raises(ValueError, match="target_ratio"):
        CropBudget(max_ratio=8, target_ratio=10)


class Spy:
    """Wraps the recogniser's model call and records every batch's shape and tensor bytes."""

    def __init__(self, rec: PPOCRRecognizer, monkeypatch):
        self.rec, self.calls = rec, []
        real = rec._run

        def run(crops, widths):
            self.calls.append((len(crops), max(widths), rec.batch_bytes(max(widths), len(crops))))
            return real(crops, widths)

        monkeypatch.setattr(rec, "_run", run)

    @property
    def max_bytes(self) -> int:
        return max(b for _, _, b in self.calls)


@pytest.fixture(scope="module")
def ppocr() -> PPOCRRecognizer:
    return PPOCRRecognizer(device="cpu", threads=1)


@pytest.mark.slow
def test_receipt_lines_are_read_whole(ppocr, monkeypatch):
    crops = render_lines([LINE, "THANK YOU PLEASE COME AGAIN", "CHANGE 24.50"])
    assert all(c.shape[1] / c.shape[0] <= MAX_RATIO for c in crops)
    spy = Spy(ppocr, monkeypatch)
    texts = [r.text for r in ppocr.recognize(crops)]
    assert sum(n for n, _, _ in spy.calls) == len(crops)  # one piece per crop: nothing split
    assert cer(texts, [LINE, "THANK YOU PLEASE COME AGAIN", "CHANGE 24.50"]) < 0.02


@pytest.mark.slow
def test_long_line_is_split_and_merged(ppocr, monkeypatch):
    crop = render_lines([LONG_LINE])[0]
    h, w = crop.shape[:2]
    assert w / h > MAX_RATIO
    spy = Spy(ppocr, monkeypatch)
    reading = ppocr.recognize([crop])[0]
    assert sum(n for n, _, _ in spy.calls) >= 2  # read in chunks...
    assert all(width <= REC_HEIGHT * MAX_RATIO for _, width, _ in spy.calls)  # ...each within the ratio
    assert cer([reading.text], [LONG_LINE]) < 0.03  # ...and merged back into one line
    assert len(reading.char_x) == len(reading.text) and list(reading.char_x) == sorted(reading.char_x)
    assert 0 <= reading.char_x[0] and reading.char_x[-1] <= w


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 20000), (20000, 3)])
def test_hostile_thin_crop_is_read_with_bounded_tensors(monkeypatch, shape):
    rec = PPOCRRecognizer(device="cpu", threads=1, max_chars=100)
    spy = Spy(rec, monkeypatch)
    crop = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    reading = rec.recognize([crop])[0]
    assert len(reading.text) <= 100
    # unsplit, 20000x3 px would be one (1, 3, 48, 320000) input and a (1, 40000, 316) output: 0.23 GB
    # (3.2 GB with the whole dictionary's 18710 columns)
    assert rec.batch_bytes(REC_HEIGHT * 20000 // 3, 1) > 3 * rec.max_batch_bytes
    assert spy.calls and spy.max_bytes <= rec.max_batch_bytes == 64 * 2**20
    assert sum(n for n, _, _ in spy.calls) <= 10  # only the first max_chars heights are read


@pytest.mark.slow
def test_degenerate_crops_read_empty_without_a_model_call(ppocr, monkeypatch):
    spy = Spy(ppocr, monkeypatch)
    crops = [np.zeros((1, 20000, 3), np.uint8), np.zeros((20000, 1, 3), np.uint8), np.zeros((0, 0, 3), np.uint8),
             np.full((1, 1), 255, np.uint8)]
    assert ppocr.recognize(crops) == [EMPTY_READING] * 4
    assert spy.calls == []


@pytest.mark.slow
def test_readings_are_cut_to_max_chars():
    rec = PPOCRRecognizer(device="cpu", threads=1, max_chars=5)
    reading = rec.recognize(render_lines([LINE]))[0]
    assert reading.text == LINE[:5]
    assert len(reading.char_probs) == len(reading.char_x) == 5
    assert reading.confidence == pytest.approx(np.mean(reading.char_probs))


@pytest.mark.slow
def test_batches_are_bounded_in_bytes_and_readings_do_not_depend_on_them(monkeypatch):
    crops = render_lines([LINE] * 6)
    big = PPOCRRecognizer(device="cpu", threads=1)
    small = PPOCRRecognizer(device="cpu", threads=1, max_batch_bytes=1)  # every crop alone
    spy = Spy(small, monkeypatch)
    assert small.recognize(crops) == big.recognize(crops)
    assert [n for n, _, _ in spy.calls] == [1] * 6
    width = max(w for _, w, _ in spy.calls)
    limited = PPOCRRecognizer(device="cpu", threads=1, max_batch_bytes=2 * big.batch_bytes(width, 1))
    spy = Spy(limited, monkeypatch)
    limited.recognize(crops)
    assert [n for n, _, _ in spy.calls] == [2, 2, 2]


def test_read_within_budget_maps_chunk_positions_to_the_crop():
    """The plumbing alone: a reader that sees "ab" at 1/4 and 3/4 of every piece."""
    pieces = []

    def read(batch):
        pieces.extend(batch)
        return [LineReading.from_chars("ab", [0.5, 0.5], [p.shape[1] / 4, 3 * p.shape[1] / 4]) for p in batch]

    budget = CropBudget(max_ratio=8, target_ratio=6, overlap_ratio=0.5, max_chars=100)
    crop = np.zeros((10, 200, 3), np.uint8)  # ratio 20: chunks of 60 px
    readings = read_within_budget([crop, np.zeros((10, 50, 3), np.uint8)], read, budget)
    chunks, starts, _ = split_wide_crop(crop, 8, 6, 0.5)
    assert [p.shape[1] for p in pieces] == [c.shape[1] for c in chunks] + [50]
    assert readings[0].text == "ab"  # docTR's merge distrusts the cut ends: a[:-1] + b[1:]
    assert readings[0].char_x == (15.0, starts[-1] + 45.0)  # first chunk's "a", last chunk's "b", crop px
    assert readings[1].char_x == (12.5, 37.5)
    assert budget.read_width(10) == 1000 and CropBudget(max_chars=10).read_width(10) == 100


def test_only_the_first_max_chars_heights_are_read():
    pieces = []

    def read(batch):
        pieces.extend(batch)
        return [LineReading.from_chars("", [], []) for _ in batch]

    budget = CropBudget(max_ratio=8, target_ratio=6, overlap_ratio=0.5, max_chars=50)  # 50 heights of width
    crop = np.zeros((10, 20_000, 3), np.uint8)
    assert read_within_budget([crop], read, budget) == [EMPTY_READING]
    assert sum(p.shape[1] for p in pieces) <= 2 * 500 and len(pieces) == len(split_wide_crop(crop[:, :500])[0])


@pytest.mark.slow
def test_every_model_call_fits_in_a_warm_up_call(monkeypatch):
    """Issue 24: the recogniser warms its memory up to the calls of ``largest_batches``; every later
    call must fit in one of them. Widths are clamped to ``max_input_width`` (a chunk of a split crop
    may be a few px over: 3 px high, split at 40.1 heights -> 121 px, i.e. 1936 px resized against
    1928), and a call's crops x width is bounded by ``max_batch_columns``."""
    rec = PPOCRRecognizer(device="cpu", threads=1, max_ratio=40.1, target_ratio=40.1)
    assert rec.max_input_width == 1928 and resized_width(3, 121) == 1936  # the chunk, unclamped: over
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (3, 200, 3), dtype=np.uint8)]  # split into 121 px chunks
    crops += [rng.integers(0, 256, (REC_HEIGHT, w, 3), dtype=np.uint8)
              for w in [1920] * 5 + [1024] * 9 + [128] * 40 + list(range(16, 1900, 37))]
    spy = Spy(rec, monkeypatch)
    rec.recognize(crops)
    warm = rec.largest_batches()
    assert (2, 1928) in warm
    for n, width, _ in spy.calls:
        assert width <= rec.max_input_width
        assert n == 1 or n * width <= rec.max_batch_columns
        assert any(n * width <= wn * ww and width <= ww for wn, ww in warm), (n, width, warm)
    assert max(n * width for n, width, _ in spy.calls) > rec.max_batch_columns // 2  # the bound was reached


def _uss_growth_over_new_shapes(rec: PPOCRRecognizer) -> float:
    """MiB of USS ``rec`` gains reading 40 calls of shapes it has not read before, the largest its
    bounds allow among them (noise crops 48 px high: the resized width is the crop's)."""
    import psutil

    rng = np.random.default_rng(1)
    widths = [1920] * 4 + [1024] * 8 + [128] * 32 + [w for w in range(40, 1900, 24) for _ in range(3)]
    crops = [rng.integers(0, 256, (REC_HEIGHT, w, 3), dtype=np.uint8) for w in widths]
    before = psutil.Process().memory_full_info().uss  # unique pages: other processes do not move it
    for k in range(0, len(crops), 40):
        rec.recognize(crops[k:k + 40])
    return (psutil.Process().memory_full_info().uss - before) / 2**20


@pytest.mark.slow
def test_recogniser_memory_does_not_grow_with_new_shapes_after_its_warm_up():
    """Issue 24's soak: recognize's PSS rose +27 % after its warm-up as larger batches first came
    (ONNX Runtime's CPU arena keeps its high-water mark). ``warm_up`` brings the arena to its ceiling
    at load; compared with a recogniser without it in the same process, never a fixed figure."""
    warm = PPOCRRecognizer(device="cpu", threads=1, backend="onnxruntime-int8")
    warm.warm_up()
    warmed = _uss_growth_over_new_shapes(warm)
    cold = _uss_growth_over_new_shapes(PPOCRRecognizer(device="cpu", threads=1, backend="onnxruntime-int8"))
    print(f"\nUSS growth over new shapes: after warm_up {warmed:.1f} MiB, without {cold:.1f} MiB")
    assert warmed * 4 < cold, (warmed, cold)


@pytest.mark.slow
def test_width_step_pads_every_call_to_its_multiple(monkeypatch):
    """``width_step`` (8 by default: one CTC frame) buckets and pads crop widths; 32 bounds the distinct
    batch shapes further (each new shape keeps ~7.5 KiB in ONNX Runtime; issue 24), at a cost in readings
    measured on the dev lines (CER +0.04 point, WER +0.22), so it stays 8."""
    with pytest.raises(ValueError, match="width_step"):
        PPOCRRecognizer(device="cpu", threads=1, width_step=12)
    rec = PPOCRRecognizer(device="cpu", threads=1, width_step=32)
    inputs = []
    real = rec.forward
    monkeypatch.setattr(rec, "forward", lambda batch: inputs.append(batch.shape) or real(batch))
    rng = np.random.default_rng(2)
    rec.recognize([rng.integers(0, 256, (REC_HEIGHT, w, 3), dtype=np.uint8) for w in (40, 57, 64, 65, 300, 1919)])
    assert inputs and all(shape[3] % 32 == 0 for shape in inputs), inputs
    assert sorted(shape[3] for shape in inputs) == [64, 96, 320, 1920]  # 40, 57, 64 share a 64 px batch

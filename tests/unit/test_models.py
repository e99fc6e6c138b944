"""Tests of the OCR models: text scoring, ONNX sessions, line detection, recognition.

Model tests (``@pytest.mark.slow``) use real images rendered here with Pillow's bundled
TrueType font (``ImageFont.load_default(size=...)``, Aileron Regular): a receipt-like
page with a header, label/amount rows in two columns and a footer.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw, ImageFont

from ocrstream.ocr.detection import DET_MEAN, DET_STD, LineDetector, crop_line, det_input, reading_order, visual_line_ids
from ocrstream.ocr.evaluation import cer, normalize, wer
from ocrstream.ocr.recognition.ppocr import ctc_greedy, fix_lookalikes, model_path, resized_width
from ocrstream.ocr.recognition.recognizer import LineReading, Recognizer
from ocrstream.ocr.recognition.registry import known_recognizers, load_recognizer
from ocrstream.ocr.runtime import onnx_session
from ocrstream.ocr.runtime.onnx_session import DeviceUnavailableError, chosen_provider, make_session

# Receipt-like rows: (left column, right column or None).
ROWS = [
    ("SUPER MART SDN BHD (123456-X)", None),
    ("Invoice No: INV-20240521", "Date: 21/05/2024"),
    ("2 x Fresh Milk 1L @ 4.50", "9.00"),
    ("1 x Bread Wholemeal", "3.85"),
    ("TOTAL (RM):", "27.35"),
    ("Thank you, please come again!", None),
]
EXPECTED = [text for row in ROWS for text in row if text]  # reading order
FONT_SIZE = 28
ROW_PITCH = 60
RIGHT_COLUMN_X = 520
#: Recognition bound on the clean rendering. PP-OCRv6 reads these 150 characters
#: perfectly today (CER 0 %) and gets 1.4 % CER ci on real, noisy SROIE receipt scans
#: (bench/bench_recognize.py); a clean page must do no worse than real scans, so 1.5 %
#: (two character slips) fails on any real regression without flaking on one slip.
MAX_CLEAN_CER = 0.015


# --- rendering ----------------------------------------------------------------
def render_page(scale: float = 1.0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """(page (H, W, 3) uint8 BGR, text boxes [x0, y0, x1, y1] in EXPECTED order)."""
    font = ImageFont.load_default(size=round(FONT_SIZE * scale))
    size = (round(800 * scale), round((40 + ROW_PITCH * len(ROWS)) * scale))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    boxes = []
    for i, row in enumerate(ROWS):
        y = round((30 + ROW_PITCH * i) * scale)
        for x, text in zip((30, RIGHT_COLUMN_X), row):
            if text:
                draw.text((round(x * scale), y), text, fill="black", font=font)
                boxes.append(draw.textbbox((round(x * scale), y), text, font=font))
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), boxes


def render_line(text: str, size: int = FONT_SIZE) -> tuple[np.ndarray, list[float]]:
    """(crop (H, W, 3) uint8 BGR of one line with margins, true x centre of each character)."""
    font = ImageFont.load_default(size=size)
    margin = size // 3
    image = Image.new("RGB", (round(font.getlength(text)) + 2 * margin, round(size * 1.5)), "white")
    ImageDraw.Draw(image).text((margin, size * 0.15), text, fill="black", font=font)
    centres = [margin + (font.getlength(text[:i]) + font.getlength(text[: i + 1])) / 2 for i in range(len(text))]
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1]), centres


def box_crop(page: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop with the SROIE dev-lines margins (x: max(2, h/4), y: max(1, h/10))."""
    x0, y0, x1, y1 = box
    h = y1 - y0
    mx, my = max(2, h // 4), max(1, h // 10)
    return page[max(0, y0 - my) : y1 + my, max(0, x0 - mx) : x1 + mx]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return load_recognizer("ppocr", device="cpu", threads=1)


@pytest.fixture(scope="module")
def detector() -> LineDetector:
    return LineDetector(device="cpu", threads=1)


# --- evaluation (fast) --------------------------------------------------------
def test_normalize_collapses_whitespace_and_case():
    assert normalize("  Total\t RM \n 9.00 ", case_insensitive=True) == "total rm 9.00"
    assert normalize("A  b", case_insensitive=False) == "A b"


def test_cer_is_micro_averaged():
    # 1 edit over 4 ref chars + 0 edits over 6 -> 1 / 10 (a mean of per-item CERs would be 0.125)
    assert cer(["abcx", "ghijkl"], ["abcd", "GHIJKL"]) == pytest.approx(0.1)
    assert cer(["ab c"], ["abc"], ignore_spaces=True) == 0.0
    assert cer(["ABC"], ["abc"], ci=False) == 1.0


def test_wer_counts_words():
    assert wer(["total rm 9.00"], ["TOTAL RM 9.00"]) == 0.0
    assert wer(["totalrm 9.00"], ["TOTAL RM 9.00"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


# --- onnx session (fast) ------------------------------------------------------
def test_session_on_cpu_with_env_threads(monkeypatch):
    monkeypatch.setenv(onnx_session.THREADS_ENV, "1")
    session = make_session(model_path(), device="cpu")
    assert chosen_provider(session) == "CPUExecutionProvider"
    assert onnx_session.resolve_threads(None) == 1
    assert onnx_session.resolve_threads(3) == 3
    monkeypatch.setenv(onnx_session.THREADS_ENV, "auto")
    assert onnx_session.resolve_threads(None) is None  # onnxruntime's default
    monkeypatch.delenv(onnx_session.THREADS_ENV)
    assert onnx_session.resolve_threads(None) == onnx_session.DEFAULT_THREADS == 1


def test_graph_optimisation_level_is_a_setting(monkeypatch):
    assert onnx_session.resolve_graph_opt() == ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # default
    monkeypatch.setenv(onnx_session.GRAPH_OPT_ENV, "basic")
    assert onnx_session.resolve_graph_opt() == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    make_session(model_path(), device="cpu")  # the model loads at that level
    monkeypatch.setenv(onnx_session.GRAPH_OPT_ENV, "fastest")
    with pytest.raises(ValueError, match="OCRSTREAM_ORT_GRAPH_OPT"):
        make_session(model_path(), device="cpu")


def test_cuda_requested_but_unavailable_raises(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceUnavailableError, match="CUDAExecutionProvider"):
        make_session(model_path(), device="cuda")


def test_bad_device_and_threads_raise():
    with pytest.raises(ValueError):
        make_session(model_path(), device="tpu")
    with pytest.raises(ValueError):
        make_session(model_path(), device="cpu", threads=0)


# --- decoding helpers (fast) --------------------------------------------------
def test_ctc_greedy_merges_repeats_and_restores_spaces():
    # labels: 0 blank, 1 'a', 2 'b', 3 space; frames a a _ _ b with p(space)=0.3 in a gap frame
    probs = np.array(
        [[0.1, 0.9, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.7, 0.0, 0.0, 0.3], [0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0]]
    )
    labels, p, centres = ctc_greedy(probs, space_index=3, space_threshold=0.2)
    assert labels.tolist() == [1, 3, 2]
    assert p.tolist() == pytest.approx([0.9, 0.3, 1.0])
    assert centres.tolist() == pytest.approx([0.5, 2.0, 4.0])
    labels, _, _ = ctc_greedy(probs, space_index=3, space_threshold=None)
    assert labels.tolist() == [1, 2]


def test_fix_lookalikes_only_inside_words():
    assert fix_lookalikes("INV0ICE Ma11 Leve1 G3O") == "INVOICE Mall Level G30"
    assert fix_lookalikes("RM10 A1 WD40 100.00 x1") == "RM10 A1 WD40 100.00 x1"


def test_line_reading_checks_lengths():
    reading = LineReading.from_chars("ab", [0.5, 1.0], [3.0, 9.0])
    assert reading.confidence == pytest.approx(0.75)
    with pytest.raises(ValueError):
        LineReading("ab", 1.0, (1.0,), (1.0, 2.0))


# --- reading order (fast) -----------------------------------------------------
def quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def test_reading_order_groups_visual_lines():
    quads = [
        quad(300, 52, 400, 80),  # 0: right box of line 2, slightly lower than its label
        quad(10, 10, 200, 40),   # 1: line 1
        quad(10, 50, 150, 78),   # 2: label of line 2
        quad(10, 85, 150, 113),  # 3: line 3 (overlaps line 2 by 2 px only)
    ]
    assert reading_order(quads) == [1, 2, 0, 3]
    assert visual_line_ids(quads) == [1, 0, 1, 2]
    assert reading_order([]) == []


# --- models (slow) ------------------------------------------------------------
def test_unknown_recognizer_raises():
    with pytest.raises(ValueError, match="ppocr"):
        load_recognizer("no-such-model")
    assert "ppocr" in known_recognizers()


@pytest.mark.slow
def test_detection_finds_lines_in_reading_order(detector, recognizer):
    page, _ = render_page()
    lines = detector.detect(page)
    assert len(lines) == len(EXPECTED)
    for line in lines:
        assert line.quad.shape == (4, 2) and line.quad.dtype == np.float32
        assert 0.5 <= line.score <= 1.0
        tl, tr, br, bl = line.quad
        assert tl[0] < tr[0] and tl[1] < bl[1] and br[0] > bl[0]  # clockwise from top-left
    texts = [r.text for r in recognizer.recognize([crop_line(page, line.quad) for line in lines])]
    # order: each detected line is closest to the expected line at the same index
    for i, text in enumerate(texts):
        distances = [cer([text], [ref]) for ref in EXPECTED]
        assert int(np.argmin(distances)) == i, (text, EXPECTED[i])
    assert cer(texts, EXPECTED) <= MAX_CLEAN_CER


@pytest.mark.slow
def test_detection_quads_are_in_page_pixels(detector):
    page, boxes = render_page(scale=0.6)
    big = np.repeat(np.repeat(page, 3, axis=0), 3, axis=1)  # 3x page, long side 2400 > max_side
    for image, factor in ((page, 1.0), (big, 3.0)):
        lines = detector.detect(image)
        assert len(lines) == len(boxes)
        for line, box in zip(lines, boxes):
            x0, y0 = line.quad.min(axis=0)
            x1, y1 = line.quad.max(axis=0)
            tol = 0.6 * (box[3] - box[1]) * factor
            assert abs(x0 - box[0] * factor) < tol and abs(x1 - box[2] * factor) < tol
            assert abs((y0 + y1) / 2 - (box[1] + box[3]) / 2 * factor) < tol


def test_detector_input_is_rapidocrs_preprocessing_in_one_pass():
    """det_input (cv2.dnn.blobFromImage) gives DBNet the values rapidocr's DetPreProcess gives, on a
    real receipt and at a side that shrinks it, and None where rapidocr gives None."""
    from pathlib import Path

    import cv2
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    page = cv2.imread(str(Path(__file__).resolve().parents[2] / "samples" / "receipt.png"), cv2.IMREAD_COLOR)
    for side in (1536, 700):
        ours = det_input(page, side)
        theirs = DetPreProcess(side, "max", list(DET_MEAN), list(DET_STD))(page)
        assert ours is not None and theirs is not None
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        assert max(ours.shape[2:]) <= side and ours.shape[2] % 32 == 0 and ours.shape[3] % 32 == 0
        assert float(np.abs(ours - theirs).max()) < 1e-6
        assert ours.min() >= -1.0 and ours.max() <= 1.0 and ours.min() < -0.9  # ink reaches near -1
    tiny = np.full((8, 8, 3), 255, np.uint8)  # rounds to 0 px: degenerate for DBNet
    assert (det_input(tiny, 1536) is None) == (DetPreProcess(1536, "max", list(DET_MEAN), list(DET_STD))(tiny) is None)


def test_crop_line_cuts_upright_boxes_out_as_the_warp_would(detector):
    """An upright whole-pixel box inside the page is cut out without the perspective warp, with the
    very pixels rapidocr's get_rotate_crop_image gives; every other quad still goes through it."""
    from pathlib import Path

    import cv2
    from rapidocr.utils.process_img import get_rotate_crop_image

    from ocrstream.ocr.detection import _upright_crop

    page = cv2.imread(str(Path(__file__).resolve().parents[2] / "samples" / "receipt.png"), cv2.IMREAD_COLOR)
    h, w = page.shape[:2]
    detected = [line.quad for line in detector.detect(page)]

    def box(x0, y0, x1, y1):
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)

    quads = detected + [box(10, 20, 200, 50), box(30, 40, 45, 120),  # a line; a tall box (turned 90 degrees)
                        box(0, 0, w, h), box(10.5, 20, 200, 50),  # the whole page; a half-pixel corner
                        box(-5, 20, 200, 50), box(w - 100, 20, w + 3, 50),  # past the page's edges
                        np.array([[10, 20], [200, 24], [199, 54], [9, 50]], np.float32)]  # a turned box
    assert any(_upright_crop(page, q) is not None for q in detected)
    assert [_upright_crop(page, q) is not None for q in quads[len(detected):]] == [True, True, True, False,
                                                                                   False, False, False]
    for quad in quads:
        ours, theirs = crop_line(page, quad), get_rotate_crop_image(page, np.asarray(quad, np.float32))
        assert ours.flags.c_contiguous and ours.shape == theirs.shape and np.array_equal(ours, theirs), quad


@pytest.mark.slow
def test_detector_input_follows_the_glyph_height_within_its_bounds(detector, recognizer):
    page, _ = render_page(scale=3.0)  # 2400 px wide, ~60 px glyphs: 12 px glyphs would be a 480 px page
    fixed = LineDetector(device="cpu", threads=1, glyph_px=0)
    assert fixed.input_side(page) == fixed.max_side == 1536
    assert detector.input_side(page) == detector.min_side == 640  # clipped at the lower bound
    assert LineDetector(device="cpu", threads=1, min_side=1000).input_side(page) == 1000
    assert detector.input_side(np.full((2000, 1500, 3), 255, np.uint8)) == detector.max_side  # no glyphs
    lines, fixed_lines = detector.detect(page), fixed.detect(page)
    assert len(lines) == len(fixed_lines) == len(EXPECTED)
    texts = [r.text for r in recognizer.recognize([crop_line(page, line.quad) for line in lines])]
    assert cer(texts, EXPECTED) <= MAX_CLEAN_CER
    with pytest.raises(ValueError, match="min_side"):
        LineDetector(device="cpu", threads=1, min_side=2000)
    with pytest.raises(ValueError, match="glyph_px"):
        LineDetector(device="cpu", threads=1, glyph_px=-1)


@pytest.mark.slow
def test_recognition_cer_on_rendered_lines(recognizer):
    page, boxes = render_page()
    readings = recognizer.recognize([box_crop(page, b) for b in boxes])
    assert cer([r.text for r in readings], EXPECTED) <= MAX_CLEAN_CER
    for r in readings:
        assert len(r.char_probs) == len(r.char_x) == len(r.text)
        assert 0.0 <= r.confidence <= 1.0 and r.confidence == pytest.approx(np.mean(r.char_probs))
        assert list(r.char_x) == sorted(r.char_x)


@pytest.mark.slow
def test_character_positions_match_glyphs(recognizer):
    crop, centres = render_line("Invoice No: INV-20240521")
    reading = recognizer.recognize([crop])[0]
    assert reading.text == "Invoice No: INV-20240521"
    # CTC peaks sit within one 8-px frame of the glyph (~0.2 crop heights): allow 0.35
    assert np.max(np.abs(np.array(reading.char_x) - centres)) < 0.35 * crop.shape[0]


@pytest.mark.slow
def test_batch_equals_one_at_a_time(recognizer):
    page, boxes = render_page()
    crops = [box_crop(page, b) for b in boxes]
    crops += [c.copy() for c in crops[::2]] + [np.zeros((0, 5, 3), np.uint8)]  # equal widths batch together
    batched = recognizer.recognize(crops)
    single = [recognizer.recognize([c])[0] for c in crops]
    assert [b.text for b in batched] == [s.text for s in single]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b.char_probs, s.char_probs, atol=1e-4)
        np.testing.assert_allclose(b.char_x, s.char_x, atol=1e-6)
    assert batched[-1] == LineReading("", 0.0, (), ())
    assert recognizer.recognize([]) == []


def test_width_scale_narrows_the_model_input_and_keeps_positions_in_crop_pixels(recognizer):
    crop, centres = render_line("TOTAL (RM): 27.35")
    narrow = load_recognizer("ppocr", device="cpu", threads=1, width_scale=0.5)
    widths: dict[str, int] = {}
    for name, rec in (("default", recognizer), ("narrow", narrow)):
        forward = rec.forward

        def spy(batch: np.ndarray, name: str = name, forward=forward) -> np.ndarray:
            widths[name] = batch.shape[3]
            return forward(batch)

        rec.forward = spy  # type: ignore[method-assign]
        try:
            reading = rec.recognize([crop])[0]
        finally:
            del rec.forward
        assert max(reading.char_x) <= crop.shape[1] and min(reading.char_x) >= 0  # crop px, either scale
    assert widths["default"] == -(-resized_width(*crop.shape[:2]) // 8) * 8
    assert widths["narrow"] == -(-resized_width(*crop.shape[:2], 0.5) // 8) * 8 < widths["default"] * 0.6
    for bad in (0.2, 2.5):
        with pytest.raises(ValueError, match="width_scale"):
            load_recognizer("ppocr", device="cpu", threads=1, width_scale=bad)


def test_concurrent_calls_setting(monkeypatch):
    monkeypatch.delenv(onnx_session.CALLS_ENV, raising=False)
    assert onnx_session.resolve_concurrent_calls(None) == onnx_session.DEFAULT_CONCURRENT_CALLS == 2
    monkeypatch.setenv(onnx_session.CALLS_ENV, "3")
    assert onnx_session.resolve_concurrent_calls(None) == 3
    assert onnx_session.resolve_concurrent_calls(1) == 1
    for bad in ("0", "two"):
        monkeypatch.setenv(onnx_session.CALLS_ENV, bad)
        with pytest.raises(ValueError, match="OCRSTREAM_ORT_CONCURRENT_CALLS|>= 1"):
            onnx_session.resolve_concurrent_calls(None)


@pytest.mark.slow
def test_concurrent_calls_read_as_one_at_a_time(recognizer):
    """Batches run on several threads at once: same readings, in input order, as one call at a time."""
    page, boxes = render_page()
    crops = [box_crop(page, b) for b in boxes]
    crops = crops + crops[::-1] + [np.zeros((1, 40, 3), np.uint8)]  # several batches of several widths
    concurrent = load_recognizer("ppocr", device="cpu", threads=1, concurrent_calls=3)
    assert concurrent.concurrent_calls == 3
    sequential = load_recognizer("ppocr", device="cpu", threads=1, concurrent_calls=1)
    assert len(concurrent._batches([resized_width(*c.shape[:2]) for c in crops])) > 3
    expected = sequential.recognize(crops)
    assert [r.text for r in concurrent.recognize(crops)] == [r.text for r in expected]
    assert [r.text for r in expected[: len(boxes)]] == [r.text for r in expected[len(boxes): 2 * len(boxes)]][::-1]
    assert any(r.text for r in expected)

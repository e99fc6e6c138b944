"""TrOCR on ONNX Runtime: export + runtime parity with PyTorch ``generate()`` on a tiny random model.

The model is built by the fixture with transformers (``make_tiny_trocr``: ViT encoder + TrOCR
decoder, ~70k parameters, a byte-level BPE tokenizer trained on a few lines) -- no weights are
downloaded. Random weights emit the same few tokens over and over, so the builder sets the EOS
row of the (tied) output projection close to the most frequent token's row: lines then end at
different lengths (1 .. max_new_tokens), some by EOS and some by the length limit, and outputs
differ from image to image; ``test_fixture_outputs_are_diverse`` asserts this so that the
parity tests could fail.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("optimum.exporters.onnx")

from PIL import Image  # noqa: E402

from ocrstream.ocr.recognition.longlines import merge_chunk_texts, split_wide_crop  # noqa: E402
from ocrstream.ocr.recognition.recognizer import LineReading  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402
from ocrstream.ocr.recognition.trocr import MODEL_DIR_ENV, TrOCRRecognizer  # noqa: E402
from ocrstream.training.trocr_export import CHECK_LINES, export_trocr, make_tiny_trocr, render_lines  # noqa: E402

pytestmark = pytest.mark.slow

EOS, PAD, START = 2, 1, 2
LINES = CHECK_LINES + ["A", "12", "Sample date: 2026-11-20 08:15", "CORNER GROCER SDN BHD"]


def _pixels(processor, images_bgr):
    pil = [Image.fromarray(np.ascontiguousarray(i[:, :, ::-1])) for i in images_bgr]
    return processor(images=pil, return_tensors="pt").pixel_values


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(model, processor, onnx_dir, images)``: a random TrOCR built here, its export, rendered lines."""
    from transformers import TrOCRProcessor, VisionEncoderDecoderModel

    torch.set_num_threads(2)
    src = make_tiny_trocr(tmp_path_factory.mktemp("trocr") / "src")
    model = VisionEncoderDecoderModel.from_pretrained(src).eval()
    processor = TrOCRProcessor.from_pretrained(src)
    onnx_dir = src.parent / "onnx"
    export_trocr(src, onnx_dir, keep_split=True)
    return model, processor, onnx_dir, render_lines(LINES)


@pytest.fixture(scope="module")
def runtimes(tiny):
    _, _, onnx_dir, _ = tiny
    return {mode: TrOCRRecognizer(onnx_dir, device="cpu", threads=2, decoder=mode, max_batch_size=32)
            for mode in ("merged", "split")}


def _hf_rows(model, pixels, **gen):
    with torch.no_grad():
        out = model.generate(pixels, return_dict_in_generate=True, output_scores=True, output_logits=True, **gen)
    return out


def _padded(ids, width):
    return list(ids) + [PAD] * (width - len(ids))


def test_preprocessing_equals_vit_image_processor(tiny, runtimes):
    _, processor, _, images = tiny
    rec = runtimes["merged"]
    theirs = _pixels(processor, images).numpy()
    ours = rec.preprocess(images)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("resample", [1, 3, 4])
def test_preprocessing_other_filters(tiny, resample):
    from transformers import ViTImageProcessor

    from ocrstream.ocr.recognition.trocr import ImageProcessorSpec

    _, _, _, images = tiny
    cfg = dict(size={"height": 48, "width": 96}, resample=resample,
               image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    theirs = _pixels(ViTImageProcessor(**cfg), images).numpy()
    ours = ImageProcessorSpec.from_dict(ViTImageProcessor(**cfg).to_dict())(images)
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("clean_up", [False, True])
def test_token_decoder_matches_transformers_batch_decode(tiny, clean_up):
    from transformers import AutoTokenizer

    from ocrstream.ocr.recognition.trocr import TokenDecoder

    _, _, onnx_dir, _ = tiny
    hf = AutoTokenizer.from_pretrained(onnx_dir.parent / "src", clean_up_tokenization_spaces=clean_up)
    ours = TokenDecoder(onnx_dir)
    ours.clean_up = clean_up
    rng = np.random.default_rng(0)
    seqs = [hf(t)["input_ids"] for t in ["Hello , world .", "it 's done !", "Total: 25.50 ?"]]
    seqs += [rng.integers(0, len(hf), n).tolist() for n in (1, 3, 17, 40)] + [[0, 5, 2, 1, 1], []]
    for ids in seqs:
        assert ours.decode(ids) == hf.batch_decode([ids], skip_special_tokens=True)[0]
        text, owner = ours.decode_with_owners(ids)
        assert text == ours.decode(ids) and len(owner) == len(text) and owner == sorted(owner)


def test_fixture_outputs_are_diverse(tiny):
    model, processor, _, images = tiny
    seqs = model.generate(_pixels(processor, images), max_new_tokens=20)
    rows = [tuple(r) for r in seqs[:, 1:].tolist()]
    lengths = {r.index(EOS) + 1 if EOS in r else len(r) for r in rows}
    assert len(set(rows)) >= 5, "random model gives the same output for every image"
    assert len(lengths) >= 4 and 20 in lengths and min(lengths) < 10, lengths


SETTINGS = [
    dict(num_beams=1, max_new_tokens=8),
    dict(num_beams=1, max_new_tokens=20),
    dict(num_beams=1, max_new_tokens=12, min_new_tokens=3),
    dict(num_beams=3, max_new_tokens=8),
    dict(num_beams=3, max_new_tokens=20),
    dict(num_beams=3, max_new_tokens=16, length_penalty=2.0, early_stopping=True),
    dict(num_beams=4, max_new_tokens=12, length_penalty=0.5, early_stopping="never"),
    dict(num_beams=3, max_new_tokens=14, no_repeat_ngram_size=2),
]


@pytest.mark.parametrize("mode", ["merged", "split"])
@pytest.mark.parametrize("gen", SETTINGS, ids=lambda g: "-".join(f"{k}={v}" for k, v in g.items()))
def test_generate_parity_with_pytorch(tiny, runtimes, gen, mode):
    model, processor, _, images = tiny
    pixels = _pixels(processor, images)
    hf = _hf_rows(model, pixels, early_stopping=gen.get("early_stopping", False), **{
        k: v for k, v in gen.items() if k != "early_stopping"})
    ours = runtimes[mode].generate_from_pixels(pixels.numpy(), **gen)
    width = hf.sequences.shape[1] - 1
    for i, r in enumerate(ours):
        assert _padded(r.token_ids, width) == hf.sequences[i, 1:].tolist(), f"image {i}: {LINES[i]!r}"
    assert [r.text for r in ours] == processor.batch_decode(hf.sequences, skip_special_tokens=True)
    if gen["num_beams"] > 1:
        np.testing.assert_allclose([r.score for r in ours], hf.sequences_scores.numpy(), rtol=1e-4, atol=1e-4)
    else:  # greedy: per-token probabilities = softmax of the raw logits HF computed
        steps = torch.stack(hf.logits, 1).log_softmax(-1)  # (N, T, V)
        for i, r in enumerate(ours):
            want = [float(steps[i, t, tok].exp()) for t, tok in enumerate(r.token_ids)]
            np.testing.assert_allclose(r.token_probs, want, rtol=1e-4, atol=1e-6)


def test_batch_composition_does_not_change_results(runtimes, tiny):
    _, _, _, images = tiny
    rec = runtimes["merged"]
    for gen in (dict(num_beams=1, max_new_tokens=20), dict(num_beams=3, max_new_tokens=20)):
        together = rec.generate(images, **gen)
        alone = [rec.generate([img], **gen)[0] for img in images[:6]]
        assert [r.token_ids for r in alone] == [r.token_ids for r in together[:6]]


def test_recognizer_interface(tiny, monkeypatch):
    _, _, onnx_dir, images = tiny
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=MODEL_DIR_ENV):
        load_recognizer("trocr", device="cpu", max_batch_size=4)
    monkeypatch.setenv(MODEL_DIR_ENV, str(onnx_dir))
    rec = load_recognizer("trocr", device="cpu", max_batch_size=4, num_beams=3, max_new_tokens=20)
    assert rec.name == "trocr" and rec.provider == "CPUExecutionProvider"
    grey = images[3][:, :, 0]
    crops = [*images[:7], np.zeros((0, 0, 3), np.uint8), grey]
    readings = rec.recognize(crops)
    assert len(readings) == len(crops) and all(isinstance(r, LineReading) for r in readings)
    assert readings[7].text == ""
    assert readings[8] == rec.recognize([images[3]])[0]
    assert any(r.text for r in readings)
    for crop, r in zip(crops, readings):
        assert len(r.char_probs) == len(r.char_x) == len(r.text)
        assert 0.0 <= r.confidence <= 1.0 and all(0.0 <= p <= 1.0 for p in r.char_probs)
        assert all(0.0 <= x <= crop.shape[1] for x in r.char_x)
        assert list(r.char_x) == sorted(r.char_x)
    outs = rec.generate(images[:7])
    for o, r in zip(outs, readings[:7]):
        assert o.text == r.text
        assert 0.0 <= o.min_prob <= o.confidence <= 1.0


def test_long_line_is_split_and_merged(tiny, runtimes, monkeypatch):
    _, _, _, images = tiny
    rec = runtimes["merged"]
    long_line = render_lines(["TOTAL 25.50 CASH 50.00 CHANGE 24.50 THANK YOU PLEASE COME AGAIN"])[0]
    h, w = long_line.shape[:2]
    assert w / h > 8
    chunks, starts, last = split_wide_crop(long_line)
    assert len(chunks) >= 3
    seen = []
    real_generate = rec.generate
    monkeypatch.setattr(rec, "generate", lambda crops, **kw: seen.append(len(crops)) or real_generate(crops, **kw))
    reading = rec.recognize([long_line, images[0]])
    assert seen == [len(chunks) + 1]
    parts = []
    for out, s0, chunk in zip(real_generate(chunks), starts, chunks):
        n = len(out.text)
        parts.append((out.text, out.char_probs, [s0 + (i + 0.5) * chunk.shape[1] / n for i in range(n)]))
    text, probs, xs = merge_chunk_texts(parts, rec.overlap_ratio, last)
    assert reading[0].text == text
    assert reading[0].char_probs == pytest.approx(probs) and reading[0].char_x == pytest.approx(xs)
    assert all(0 <= x <= w for x in reading[0].char_x)
    rec.split_long_lines = False
    try:
        assert rec.recognize([long_line])[0].text == real_generate([long_line])[0].text
    finally:
        rec.split_long_lines = True


def test_int8_export_measures_its_cost(tiny, tmp_path):
    _, _, onnx_dir, images = tiny
    import json

    src = onnx_dir.parent / "src"
    manifest = export_trocr(src, tmp_path / "int8", quantize=True, check_images=images, smoke_test=False)
    assert manifest["quantized"] is True
    check = manifest["quantization"]["check_vs_fp32"]
    assert check["lines"] == len(images) and 0.0 <= check["token_agreement"] <= 1.0
    print(f"int8 vs fp32 (tiny random model, greedy, {check['lines']} lines): "
          f"token agreement {check['token_agreement']:.1%}, exact {check['exact_match']:.1%}, "
          f"CER vs fp32 {check['cer_vs_fp32']:.2%}")
    on_disk = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert on_disk["files"]["encoder"]["sha256"] == manifest["files"]["encoder"]["sha256"]
    rec = TrOCRRecognizer(tmp_path / "int8", device="cpu")
    assert len(rec.recognize(images[:2])) == 2


async def test_recognize_stage_uses_the_configured_recogniser(tiny, monkeypatch):
    """``OCRSTREAM_RECOGNIZER=trocr`` selects TrOCR in the recognize stage (metrics name it)."""
    from prometheus_client import REGISTRY

    from ocrstream.settings import Settings
    from services.recognize.stage import RecognizeStage

    monkeypatch.setenv(MODEL_DIR_ENV, str(tiny[2]))
    stage = RecognizeStage(Settings(recognizer="trocr", device="cpu", batch_max_size=8))
    await stage.setup()
    assert (stage.recognizer.name, stage.recognizer.provider) == ("trocr", "CPUExecutionProvider")
    assert REGISTRY.get_sample_value("ocrstream_stage_info", {"stage": "recognize", "key": "recognizer",
                                                              "value": "trocr"}) == 1.0

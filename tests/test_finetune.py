"""Recogniser adaptation: synthetic lines, ONNX -> torch conversion parity, tiny fine-tunes, export
parity, the CER gate, serving a fine-tuned model, evaluation CLI, label export, TrOCR fine-tuning.

Real crops: the text lines of ``samples/receipt.png`` found by the real detector (DBNet) and
cut as the preprocess stage cuts them. Training lines: rendered by ``ocrstream.training.synth``
(real fonts, clean so that labels are exact). Kept tiny (a few steps, a few lines) for CI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch = pytest.importorskip("torch")
pytest.importorskip("albumentations")

from click.testing import CliRunner  # noqa: E402

from ocrstream.cli.main import main  # noqa: E402
from ocrstream.ocr.recognition.model_manifest import ModelIntegrityError, load_model_manifest  # noqa: E402
from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer  # noqa: E402
from ocrstream.ocr.recognition.registry import load_recognizer  # noqa: E402
from ocrstream.training import synth  # noqa: E402
from ocrstream.training.finetune import FinetuneConfig, GateRefused, Trainer, backbone_parameters, finetune_ppocr  # noqa: E402
from ocrstream.training.manifest import ManifestError, load_image, read_manifest  # noqa: E402
from ocrstream.training.ppocr_torch import (  # noqa: E402
    TorchPPOCR,
    convert,
    explicit_pads,
    load_base,
    logits_model,
    ort_logits_runner,
    parity,
    torch_runner,
    write_back,
)

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def base():
    """``(shipped ONNX graph, converted torch module)``."""
    torch.set_num_threads(1)
    model, _ = load_base()
    return model, convert(model).eval()


@pytest.fixture(scope="module")
def receipt_crops():
    """Line crops of samples/receipt.png (real detector, real perspective crops)."""
    from ocrstream.ocr.detection import LineDetector, crop_line

    page = cv2.imread(str(SAMPLES / "receipt.png"), cv2.IMREAD_COLOR)
    lines = LineDetector(device="cpu", threads=1).detect(page)
    crops = [crop_line(page, line.quad) for line in lines]
    assert len(crops) >= 5
    return crops


@pytest.fixture(scope="module")
def lines_dir(tmp_path_factory):
    """Clean synthetic lines: train (24) and val (12) manifests."""
    root = tmp_path_factory.mktemp("synth")
    synth.synthesize(root / "train", 24, seed=1, degrade=False, progress=False)
    synth.synthesize(root / "val", 12, seed=2, degrade=False, progress=False)
    return root


def test_explicit_pads_rewrites_only_same_upper_nodes(base):
    model, _ = base
    import copy

    m = copy.deepcopy(model)
    assert explicit_pads(m) == 3  # two 2x2 convolutions and one 2x2 max-pool
    assert explicit_pads(m) == 0
    pads = [[a.ints for a in n.attribute if a.name == "pads"][0] for n in m.graph.node
            if n.name in ("Conv.1", "Conv.2", "MaxPool.0")]
    assert [list(p) for p in pads] == [[0, 0, 1, 1]] * 3


def test_conversion_parity_on_real_crops(base, receipt_crops):
    model, module = base
    p = parity(receipt_crops, ort_logits_runner(logits_model(model)), torch_runner(module),
               PPOCRRecognizer(device="cpu", threads=1), TorchPPOCR(module))
    print(f"conversion parity on {len(receipt_crops)} receipt crops: max |logit diff| {p.max_abs_diff:.2e}, "
          f"same arg-max {100 * p.same_argmax:.2f} %")
    assert p.max_abs_diff < 1e-3
    assert p.same_text and all(a for a, _ in p.texts)
    assert "TOTAL" in " ".join(a for a, _ in p.texts).upper()


def test_backbone_freeze_keeps_neck_and_head_trainable(base):
    _, module = base
    frozen = backbone_parameters(module)
    names = dict(module.named_parameters())
    head = max(names, key=lambda k: names[k].numel())  # the CTC head (C x 18710) is the largest tensor
    assert head not in frozen and 0 < len(frozen) < len(names)


def test_synth_lines_are_labelled_correctly(lines_dir):
    samples = read_manifest(lines_dir / "train" / "lines.jsonl")
    assert len(samples) == 24 and all(s.image.is_file() and s.text for s in samples)
    record = json.loads((lines_dir / "train" / "lines.jsonl").read_text().splitlines()[0])
    assert set(record) >= {"id", "image", "text", "src"} and not Path(record["image"]).is_absolute()
    # The shipped model reads clean renderings nearly perfectly: labels match their images.
    from ocrstream.training.evaluate import score

    result, _ = score(PPOCRRecognizer(device="cpu", threads=1), samples, "synth")
    assert result.cer_ci < 0.1


def test_synth_degrades(tmp_path):
    synth.synthesize(tmp_path / "clean", 8, seed=7, degrade=False, progress=False)
    synth.synthesize(tmp_path / "dirty", 8, seed=7, degrade=True, progress=False)
    clean = [cv2.imread(str(s.image)) for s in read_manifest(tmp_path / "clean" / "lines.jsonl")]
    dirty = [cv2.imread(str(s.image)) for s in read_manifest(tmp_path / "dirty" / "lines.jsonl")]
    assert any(a.shape != b.shape or np.abs(a.astype(int) - b).mean() > 1 for a, b in zip(clean, dirty))


def test_manifest_errors_are_typed(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x.png"}\n')
    with pytest.raises(ManifestError, match="text"):
        read_manifest(bad)


def _cfg(lines_dir: Path, out: Path, **kw) -> FinetuneConfig:
    defaults = dict(train=[str(lines_dir / "train" / "lines.jsonl")], val=str(lines_dir / "val" / "lines.jsonl"),
                    out=str(out), batch_size=4, max_steps=8, eval_every=4, val_limit=4, checkpoint_every=4,
                    warmup_steps=1, lr=1e-3, progress=False)
    defaults.update(kw)
    return FinetuneConfig(**defaults)


@pytest.fixture(scope="module")
def misread_dir(tmp_path_factory):
    """Training lines the shipped model misreads: clean synthetic lines brought down to a sixth of
    their resolution and back (about 8 px of text height), then only the lines whose reading differs
    from the label (case-insensitive). Learning shows as a lower loss on them; the clean lines of
    ``lines_dir`` are read perfectly already, so training on them cannot show it."""
    from ocrstream.training.manifest import write_manifest

    root = tmp_path_factory.mktemp("misread")
    synth.synthesize(root / "all", 64, seed=5, degrade=False, progress=False)
    records = [json.loads(line) for line in (root / "all" / "lines.jsonl").read_text().splitlines()]
    for record in records:
        path = root / "all" / record["image"]
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        h, w = image.shape
        small = cv2.resize(image, (max(1, w // 6), max(1, h // 6)), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    reader = PPOCRRecognizer(device="cpu", threads=1)
    readings = [r.text for r in reader.recognize([load_image(s) for s in read_manifest(root / "all" / "lines.jsonl")])]
    misread = [r for r, text in zip(records, readings) if text.upper() != r["text"].upper()]
    assert len(misread) >= 8, f"only {len(misread)} of {len(records)} low-resolution lines misread"
    write_manifest(root / "all" / "misread.jsonl", misread)
    return root / "all" / "misread.jsonl"


def test_tiny_finetune_lowers_loss_and_resumes(lines_dir, misread_dir, tmp_path):
    trainer = Trainer(_cfg(lines_dir, tmp_path, train=[str(misread_dir)]))
    before = trainer.mean_loss()
    trainer.run()
    after = trainer.mean_loss()
    print(f"tiny fine-tune: mean CTC loss on the training lines {before:.4f} -> {after:.4f}")
    assert after < 0.8 * before
    assert trainer.ckpt.is_file()
    # Resume: a new trainer continues from the checkpoint's step.
    again = Trainer(_cfg(lines_dir, tmp_path, train=[str(misread_dir)], max_steps=10))
    again.load()
    assert again.step == trainer.step == 8
    again.run()
    assert again.step == 10


def test_export_parity(base, receipt_crops, tmp_path):
    model, _ = base
    module = convert(model).eval()
    names = dict(module.named_parameters())
    head = max(names, key=lambda k: names[k].numel())
    with torch.no_grad():  # a changed model, so that the check could fail
        names[head].add_(0.05 * torch.randn_like(names[head]))
    path = write_back(module, model, tmp_path / "model.onnx")
    exported = PPOCRRecognizer(model=path, device="cpu", threads=1)
    whole = PPOCRRecognizer(model=path, device="cpu", threads=1, charset="all")  # every output column
    p = parity(receipt_crops, whole.forward, torch_runner(module, softmax=True), exported, TorchPPOCR(module))
    print(f"export parity: max |prob diff| {p.max_abs_diff:.2e}")
    assert p.max_abs_diff < 1e-4 and p.same_text
    # The export carries the changed weights (its probabilities differ from the shipped model's).
    shipped = PPOCRRecognizer(device="cpu", threads=1)
    changed = parity(receipt_crops[:3], exported.forward, shipped.forward, exported, shipped)  # both cut to latin
    assert changed.max_abs_diff > 1e-3


def test_gate_refuses_worse_model_and_force_writes_a_servable_one(lines_dir, tmp_path):
    broken = dict(lr=0.5, max_steps=3, eval_every=100, val_limit=1, keep="last")  # huge steps wreck the head
    with pytest.raises(GateRefused) as refused:
        finetune_ppocr(_cfg(lines_dir, tmp_path / "refused", **broken))
    assert refused.value.tuned.cer_ci > refused.value.base.cer_ci
    assert not (tmp_path / "refused" / "model.onnx").exists() and not (tmp_path / "refused" / "manifest.json").exists()

    result = finetune_ppocr(_cfg(lines_dir, tmp_path / "forced", force=True, **broken))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["metrics"]["gate_forced"] is True
    assert manifest["base"]["name"] == "PP-OCRv6_rec_small.onnx" and len(manifest["base"]["sha256"]) == 64
    served = load_recognizer("ppocr", model=tmp_path / "forced", device="cpu", threads=1)
    assert served.version == manifest["id"]
    # The int8 verdict: the shipped model's recipe on the tuned model, scored on the same validation set.
    int8 = manifest["int8"]
    assert int8["val"]["lines"] == manifest["metrics"]["val_tuned"]["lines"] and int8["margin"] == 0.001
    assert int8["served"] == (int8["val"]["cer_ci"] <= manifest["metrics"]["val_tuned"]["cer_ci"] + int8["margin"])
    in_int8 = load_recognizer("ppocr", model=tmp_path / "forced", device="cpu", threads=1, backend="onnxruntime-int8")
    assert in_int8.provider.endswith("-int8") == int8["served"], (in_int8.provider, int8)
    # A swapped model file is refused at load.
    with open(tmp_path / "forced" / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_model_manifest(tmp_path / "forced")


def test_recognize_stage_reports_the_served_model(lines_dir, tmp_path, monkeypatch):
    from ocrstream.settings import Settings
    from ocrstream.streaming import metrics
    from services.recognize.stage import RecognizeStage

    result = finetune_ppocr(_cfg(lines_dir, tmp_path, max_steps=2, eval_every=100, val_limit=1, lr=1e-6))
    model_id = json.loads(result.manifest.read_text())["id"]
    stage = RecognizeStage(Settings(ppocr_model=str(result.manifest), device="cpu"))
    monkeypatch.setattr("services.recognize.stage.ObjectStore", lambda settings: None)
    import asyncio

    asyncio.run(stage.setup())
    assert stage.recognizer.version == model_id
    assert metrics.STAGE_INFO.labels("recognize", "model", model_id)._value.get() == 1
    from ocrstream.contracts.event_models import DocumentRef, RegionsEvent, Timestamps

    event = RegionsEvent(document_id="d", document=DocumentRef(object_key="k", content_sha256="0" * 64, size_bytes=1,
                                                               source="cli"),
                         timestamps=Timestamps(ingested="2026-11-23T10:00:00+00:00"), pages=[], regions=[])
    assert stage.output(event, [], []).event.recognizer.model == model_id


def test_evaluate_cli_prints_ci_and_cs(lines_dir):
    out = CliRunner().invoke(main, ["model", "evaluate", "ppocr", "--set", str(lines_dir / "val" / "lines.jsonl"),
                                    "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output.strip().splitlines()[-1])
    assert row["lines"] == 12 and {"cer_ci", "wer_ci", "cer_cs", "wer_cs"} <= set(row)


def test_synth_and_label_export_cli(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["model", "synth", str(tmp_path / "s"), "--count", "3", "--generators", "price,date"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["model", "label-export", str(tmp_path / "e"), "--manifest", str(tmp_path / "s" / "lines.jsonl")])
    assert out.exit_code == 0, out.output
    exported = read_manifest(tmp_path / "e" / "lines.jsonl")
    assert len(exported) == 3 and all(s.image.is_file() and s.image.parent == tmp_path / "e" / "img" for s in exported)


def test_trocr_finetune_path(tmp_path, lines_dir):
    pytest.importorskip("transformers")
    from ocrstream.training.trocr_export import make_tiny_trocr
    from ocrstream.training.trocr_finetune import finetune_trocr

    src = make_tiny_trocr(tmp_path / "tiny")
    summary = finetune_trocr(src, [str(lines_dir / "train" / "lines.jsonl")], str(lines_dir / "val" / "lines.jsonl"),
                             tmp_path / "out", lr=1e-3, batch_size=8, max_steps=6, force=True, export=True)
    assert summary["training"]["steps"] == 6
    assert summary["training"]["loss_last"] < summary["training"]["loss_first"]
    reader = load_recognizer("trocr", model_dir=tmp_path / "out" / "onnx", device="cpu", threads=1)
    assert len(reader.recognize([cv2.imread(str(read_manifest(lines_dir / "val" / "lines.jsonl")[0].image))])) == 1


async def test_label_export_from_store_takes_verified_lines_only(stack_settings, tmp_path):
    import uuid

    import asyncpg

    from ocrstream.storage.crops import crop_reference, pack_crops, page_crops_key
    from ocrstream.storage.migrate import apply_migrations
    from ocrstream.storage.objectstore import ObjectStore
    from ocrstream.training.labels import verified_lines

    store = ObjectStore(stack_settings)
    await store.ensure_bucket()
    doc = uuid.uuid4().hex
    png = cv2.imencode(".png", np.full((20, 60, 3), 255, np.uint8))[1].tobytes()
    await store.put(f"crops/{doc}/0.png", png, "image/png")
    await store.put(f"crops/{doc}/1.png", png, "image/png")
    # a crop in a page's crop pack (issue 13): the database holds a crop reference key#offset,h,w
    packed = np.random.default_rng(0).integers(0, 256, (12, 30, 3), dtype=np.uint8)
    pack, spans = pack_crops([np.zeros((5, 5, 3), np.uint8), packed])
    await store.put(page_crops_key(doc, 0), pack)
    keys = [f"crops/{doc}/0.png", f"crops/{doc}/1.png", crop_reference(page_crops_key(doc, 0), *spans[1])]
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        await apply_migrations(conn)
        await conn.execute("INSERT INTO documents (document_id, status, version) VALUES ($1, 'done', 'v')", doc)
        await conn.execute("INSERT INTO pages VALUES ($1, 0, 100, 100)", doc)
        for k, verified in enumerate(["TOTAL 12.50", None, "CASH 20.00"]):
            await conn.execute(
                "INSERT INTO regions (document_id, region_id, page_index, line_index, reading_order, x0, y0, x1, y1,"
                " crop_key, text, confidence, verified_text, verified_at)"
                " VALUES ($1, $2, 0, $3, $3, 0, 0, 60, 20, $4, 'T0TAL 12.50', 0.9, $5, CASE WHEN $5::text IS NULL"
                " THEN NULL ELSE now() END)", doc, f"r{k}", k, keys[k], verified)
    finally:
        await conn.close()
    records = [r for r in await verified_lines(stack_settings, tmp_path) if r["id"].startswith(doc)]
    assert sorted((r["id"], r["text"]) for r in records) == [(f"{doc}/r0", "TOTAL 12.50"), (f"{doc}/r2", "CASH 20.00")]
    by_id = {r["id"]: r for r in records}
    assert (tmp_path / by_id[f"{doc}/r0"]["image"]).read_bytes() == png
    assert np.array_equal(cv2.imread(str(tmp_path / by_id[f"{doc}/r2"]["image"])), packed)  # written as PNG

"""Promotion of a registered model (ocrstream/storage/models.py, ``ocrstream model promote``) on the
embedded stack: the gate (``--force``), a recognize stage that follows the PostgreSQL pointer and
switches between batches without a restart, and the model recorded with every reading."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import cv2
import numpy as np
import onnx
import pytest

from ocrstream.contracts import events
from ocrstream.ocr.recognition.model_manifest import FORMAT, sha256_file
from ocrstream.ocr.recognition.ppocr import model_path
from ocrstream.storage.crops import pack_crops, page_crops_key
from ocrstream.storage.models import UnknownModelError, register_model
from ocrstream.storage.objectstore import ObjectStore
from services.recognize.stage import RecognizeStage
from services.store.stage import StoreStage
from tests.test_crops import regions_record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def loadable_model(folder, note: str, *, passed: bool) -> str:
    """A servable fine-tuned model folder: the shipped PP-OCRv6 graph with ``note`` as its ONNX
    doc string (same weights, another file: another sha256), and a manifest whose gate metrics
    passed or not. Returns the model id."""
    folder.mkdir(parents=True)
    graph = onnx.load(str(model_path()))
    graph.doc_string = note
    onnx.save(graph, str(folder / "model.onnx"))
    sha = sha256_file(folder / "model.onnx")
    manifest = {"format": FORMAT, "kind": "ppocr", "model": "model.onnx", "sha256": sha, "id": f"ppocr-ft-{sha[:12]}",
                "base": {"name": model_path().name, "sha256": sha256_file(model_path())}, "data": {"train_lines": 3},
                "settings": {}, "created": events.now_iso(),
                "metrics": {"val_base": {"cer_ci": 0.0143}, "val_tuned": {"cer_ci": 0.0132 if passed else 0.03},
                            "gate_forced": not passed}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest["id"]


def ocrstream(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def line_crops() -> list[np.ndarray]:
    crops = []
    for text in ("TOTAL 12.50", "CASH 20.00"):
        crop = np.full((48, 320, 3), 255, np.uint8)
        cv2.putText(crop, text, (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (0, 0, 0), 2, cv2.LINE_AA)
        crops.append(crop)
    return crops


async def test_promote_switches_a_following_recognize_stage_between_batches(stack_settings, stack_env, tmp_path):
    settings = stack_settings.model_copy(update={"follow_promoted_model": True, "device": "cpu",
                                                 "model_cache_dir": str(tmp_path / "cache")})
    tag = uuid.uuid4().hex[:8]
    good_id = loadable_model(tmp_path / "good", f"good {tag}", passed=True)
    bad_id = loadable_model(tmp_path / "bad", f"bad {tag}", passed=False)
    good = await register_model(settings, tmp_path / "good")
    bad = await register_model(settings, tmp_path / "bad")

    promoted = ocrstream(stack_env, "model", "promote", good.sha256[:16], "--by", "lead")
    assert promoted.returncode == 0, promoted.stderr
    assert f"live model: {good_id} ({good.sha256})" in promoted.stdout

    store = ObjectStore(settings)
    data, spans = pack_crops(line_crops())

    async def read_one(stage: RecognizeStage) -> events.RecognizedEvent:
        doc = f"promo-{uuid.uuid4().hex[:10]}"
        await store.put(page_crops_key(doc, 0), data)
        [outputs] = await stage.handle_batch([regions_record(doc, page_crops_key(doc, 0), spans)])
        assert not isinstance(outputs, BaseException), outputs
        return outputs[0].event

    stage = RecognizeStage(settings)
    await stage.setup()
    try:
        first = await read_one(stage)  # started on the live model, not the shipped one
        assert first.recognizer.model == good_id and stage.live_sha == good.sha256
        assert [r.text for r in first.regions] == ["TOTAL 12.50", "CASH 20.00"]

        refused = ocrstream(stack_env, "model", "promote", bad.sha256)
        assert refused.returncode == 1 and "GateNotPassedError" in refused.stderr and "--force" in refused.stderr
        assert await stage.refresh_model() is False  # nothing new: the same model keeps serving
        forced = ocrstream(stack_env, "model", "promote", bad_id, "--force")
        assert forced.returncode == 0 and "forced past the gate" in forced.stdout and f"was {good_id}" in forced.stdout

        assert await stage.refresh_model() is True  # what the stage's poller does every OCRSTREAM_MODEL_POLL_S
        second = await read_one(stage)  # the next batch reads with the promoted model
        assert second.recognizer.model == bad_id

        # the readings keep their model in the store
        store_stage = StoreStage(settings)
        await store_stage.setup()
        try:
            for event in (first, second):
                await store_stage.store_done(event)
            models = dict(await store_stage.pool.fetch(
                "SELECT document_id, model FROM documents WHERE document_id = ANY($1::text[])",
                [first.document_id, second.document_id]))
            assert models == {first.document_id: good_id, second.document_id: bad_id}
            row = await store_stage.pool.fetchrow("SELECT * FROM model_promotions ORDER BY id DESC LIMIT 1")
            assert (row["sha256"], row["gate_passed"], row["forced"]) == (bad.sha256, False, True)

            # a promoted model that is not in the registry: the switch fails, the current model serves on
            await store_stage.pool.execute(
                "INSERT INTO model_promotions (sha256, model_id, gate_passed) VALUES ($1, 'ghost', true)", "f" * 64)
            with pytest.raises(UnknownModelError):
                await stage.refresh_model()
            assert (await read_one(stage)).recognizer.model == bad_id
            await store_stage.pool.execute("DELETE FROM model_promotions WHERE sha256 = $1", "f" * 64)
        finally:
            await store_stage.teardown()
    finally:
        await stage.teardown()

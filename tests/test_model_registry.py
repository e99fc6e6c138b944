"""The model registry (ocrstream.storage.models.py) on the embedded stack's object store, through
the command line as users run it: ``ocrstream model register MANIFEST``, ``model list``, ``model pull``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ocrstream.ocr.recognition.model_manifest import FORMAT, load_model_manifest, sha256_file
from ocrstream.ocr.recognition.ppocr import model_path

pytestmark = pytest.mark.slow


def ocrstream(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def fine_tuned(folder, *, base_cer=0.0143, tuned_cer=0.0132, forced=False, int8=False, salt: bytes = b""):
    """A model folder in ``finetune``'s format: the shipped PP-OCRv6 graph (``salt`` appended
    makes another file: another sha256) with a manifest carrying gate metrics and the int8 verdict."""
    folder.mkdir(parents=True)
    shutil.copyfile(model_path(), folder / "model.onnx")
    if salt:
        with open(folder / "model.onnx", "ab") as fh:
            fh.write(salt)
    sha = sha256_file(folder / "model.onnx")
    manifest = {"format": FORMAT, "kind": "ppocr", "model": "model.onnx", "sha256": sha, "id": f"ppocr-ft-{sha[:12]}",
                "base": {"name": model_path().name, "sha256": sha256_file(model_path())},
                "data": {"train": [{"manifest": "/data/corrected/lines.jsonl", "sha256": "ab" * 32}],
                         "train_lines": 752},
                "settings": {"lr": 1e-4}, "created": "2026-12-06T10:00:00+00:00",
                "metrics": {"val_base": {"cer_ci": base_cer}, "val_tuned": {"cer_ci": tuned_cer},
                            "gate_forced": forced},
                "int8": {"served": int8}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return sha


def test_register_list_and_pull_a_fine_tuned_model(stack_env, tmp_path):
    sha = fine_tuned(tmp_path / "good", int8=True, salt=tmp_path.name.encode())
    forced = fine_tuned(tmp_path / "forced", tuned_cer=0.02, forced=True, salt=b"forced" + tmp_path.name.encode())

    first = ocrstream(stack_env, "model", "register", str(tmp_path / "good" / "manifest.json"))
    assert first.returncode == 0, first.stderr
    assert f"registered: {sha}" in first.stdout and "gate passed" in first.stdout
    again = ocrstream(stack_env, "model", "register", str(tmp_path / "good"))
    assert again.returncode == 0 and f"already registered: {sha}" in again.stdout
    assert "gate NOT passed" in ocrstream(stack_env, "model", "register", str(tmp_path / "forced")).stdout

    listed = {json.loads(line)["sha256"]: json.loads(line)
              for line in ocrstream(stack_env, "model", "list", "--json").stdout.splitlines()}
    assert listed[sha]["gate_passed"] is True and listed[sha]["train_lines"] == 752
    assert listed[sha]["id"] == f"ppocr-ft-{sha[:12]}" and listed[sha]["cer_ci_tuned"] == 0.0132
    assert listed[forced]["gate_passed"] is False
    assert listed[sha]["int8"] is True and listed[forced]["int8"] is False
    table = ocrstream(stack_env, "model", "list").stdout
    assert f"{sha[:12]}…" in table and "1.43% -> 1.32%" in table and "not passed" in table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows[f"{sha[:12]}…"][-1] == "yes" and rows[f"{forced[:12]}…"][-1] == "no"

    pulled = ocrstream(stack_env, "model", "pull", sha[:10], str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    model = load_model_manifest(pulled.stdout.strip())  # sha256 verified
    assert model.sha256 == sha and model.manifest["data"]["train_lines"] == 752


def test_a_model_that_does_not_match_its_manifest_is_refused(stack_env, tmp_path):
    fine_tuned(tmp_path / "bad", salt=b"bad" + tmp_path.name.encode())
    with open(tmp_path / "bad" / "model.onnx", "ab") as fh:
        fh.write(b"changed after finetune")
    result = ocrstream(stack_env, "model", "register", str(tmp_path / "bad"))
    assert result.returncode == 1 and "ModelIntegrityError" in result.stderr and "differs" in result.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else/1"}))
    result = ocrstream(stack_env, "model", "register", str(tmp_path / "other"))
    assert result.returncode == 1 and "format" in result.stderr
    unknown = ocrstream(stack_env, "model", "pull", "0" * 64, str(tmp_path / "x"))
    assert unknown.returncode == 1 and "UnknownModelError" in unknown.stderr

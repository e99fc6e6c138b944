"""Dependencies that say what they are: aiokafka's non-public API in one module, optional
libraries behind their extras with a clear message, one ONNX Runtime build per environment."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRIVATE_AIOKAFKA = ("aiokafka.client", "aiokafka.protocol", "aiokafka.conn", "aiokafka.cluster")


def _private_uses(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names if n.startswith(PRIVATE_AIOKAFKA)]
        if isinstance(node, ast.Attribute) and node.attr == "_client":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses ._client")
    return found


def test_only_offsets_uses_aiokafkas_private_api():
    uses = [u for folder in ("ocrstream", "services") for path in sorted((ROOT / folder).rglob("*.py"))
            if path.name != "offsets.py" for u in _private_uses(path)]
    assert uses == []
    assert _private_uses(ROOT / "ocrstream" / "streaming" / "offsets.py")  # the check sees them where they are


def test_pdf_export_without_its_extra_says_which_extra(monkeypatch):
    from ocrstream.errors import ConfigurationError
    from ocrstream.ocr import exports

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ocrmypdf" else real(name, *a))
    with pytest.raises(ConfigurationError, match=r"'pdf' extra \(missing: ocrmypdf\).*ocrstream\[pdf\]"):
        exports.require_pdf_extra()
    monkeypatch.setattr(importlib.util, "find_spec", real)
    exports.require_pdf_extra()  # installed here (test extra)


def test_both_onnxruntime_builds_installed_is_reported(monkeypatch):
    from ocrstream.ocr.runtime import onnx_session

    assert onnx_session.installed_runtimes() == ["onnxruntime"]  # what the lock installs
    assert onnx_session.runtime_conflict() is None
    monkeypatch.setattr(onnx_session, "installed_runtimes", lambda: ["onnxruntime", "onnxruntime-gpu"])
    assert "keep one" in onnx_session.runtime_conflict()

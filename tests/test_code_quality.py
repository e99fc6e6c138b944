"""Code quality, run by ./test.sh like every other test (``./test.sh -m quality`` alone):
ruff (lint and import order), mypy over every module of ocrstream/, services/ and schemas/ (strict on the stage
runtime, contracts, storage, settings, errors and the OCR domain; bodies checked without required annotations
elsewhere), import-linter's contracts (no stage imports another stage; ocrstream.streaming imports no stage) and the
import graph without cycles (tools/import_graph.py). Configuration: pyproject.toml ([tool.ruff], [tool.mypy],
[tool.importlinter]). Each test fails with the tool's own report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.quality


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    """``ruff check .``: fix import order and safe findings with ``ruff check --fix``."""
    result = run(sys.executable, "-m", "ruff", "check", ".", "--no-cache", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_every_module_passes():
    """``mypy`` as configured in pyproject.toml: ocrstream, services and schemas, strict on the core and ocrstream/ocr."""
    result = run(sys.executable, "-m", "mypy", "--cache-dir", "/dev/null")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_are_kept():
    result = run(BIN / "lint-imports", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_graph_has_no_cycles():
    result = run(sys.executable, "-m", "tools.import_graph")
    assert "no cycles" in result.stdout and result.returncode == 0, result.stdout + result.stderr

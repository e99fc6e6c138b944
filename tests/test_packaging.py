"""The package as people install it: a wheel built from the checkout, used from outside the
checkout, imports ``from ocrstream import OCRPipeline`` and reads a receipt with ``ocrstream ocr``;
its package data (templates, migrations, schemas) are inside it, and it carries no tests or samples."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_dir(tmp_path_factory) -> Path:
    """The wheel built from the checkout (pip, build isolation), unpacked: an installed package."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = out.glob("ocrstream-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _run(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_holds_the_library_its_data_and_no_checkout_files(wheel_dir):
    names = {p.relative_to(wheel_dir).as_posix() for p in wheel_dir.rglob("*") if p.is_file()}
    assert "ocrstream/ocr/predictor.py" in names and "services/store/stage.py" in names
    assert "ocrstream/ocr/templates/lab-report.yaml" in names
    assert "ocrstream/storage/sql/0001_init.sql" in names and "schemas/ocr.results.v1.schema.json" in names
    assert not any(n.startswith(("tests/", "samples/", "bench/", "tools/")) for n in names)


def test_installed_library_reads_a_receipt_outside_the_checkout(wheel_dir, tmp_path):
    receipt = tmp_path / "receipt.png"
    receipt.write_bytes((ROOT / "samples" / "receipt.png").read_bytes())
    imported = _run(wheel_dir, "-c", "import ocrstream; from ocrstream import OCRPipeline, Document; "
                    "print(ocrstream.__file__)", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == str(wheel_dir / "ocrstream" / "__init__.py")
    read = _run(wheel_dir, "-m", "ocrstream.cli", "ocr", str(receipt), cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    assert "TOTAL" in read.stdout and "CORNER GROCER" in read.stdout

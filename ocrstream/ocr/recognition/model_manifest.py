"""Manifest of a fine-tuned recognition model, and its integrity check at load.

``ocrstream model finetune`` (``ocrstream/training/``) writes ``OUT/model.onnx`` beside
``OUT/manifest.json``::

    {"format": "ocrstream-finetuned/1", "kind": "ppocr", "model": "model.onnx",
     "sha256": "<of model.onnx>", "id": "ppocr-ft-<first 12 hex of sha256>",
     "base": {"name": "PP-OCRv6_rec_small.onnx", "sha256": ...}, "data": {...},
     "settings": {...}, "metrics": {...}, "int8": {"recipe", "val", "margin", "served"},
     "created": "<ISO 8601 UTC>", "tools": {...}}

``int8.served`` says that the shipped model's int8 recipe read the validation set within ``int8.margin``
of this model in fp32, so the recogniser serves it in int8 (:mod:`ocrstream.ocr.recognition.int8`); a
manifest without ``int8`` (written before the fine-tuning measured it) serves in fp32.

The recognize stage loads it from ``OCRSTREAM_PPOCR_MODEL`` (the manifest, or the folder
holding it): the ONNX file's sha256 must equal the manifest's, so a swapped or truncated
file never serves. This module needs no torch: it is the runtime half of the format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FORMAT", "MANIFEST_NAME", "ModelIntegrityError", "FineTunedModel", "int8_served", "load_model_manifest",
           "sha256_file"]

FORMAT = "ocrstream-finetuned/1"
MANIFEST_NAME = "manifest.json"


class ModelIntegrityError(RuntimeError):
    """The manifest is unreadable, of another format, or its model file is missing or altered."""


def int8_served(entry: dict[str, Any] | None) -> bool:
    """Whether a manifest's ``int8`` entry (None: a manifest without one) lets the model serve in int8:
    its ``served`` is exactly True (the fine-tuning measured the int8 model within the margin)."""
    return entry is not None and entry.get("served") is True


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FineTunedModel:
    """A verified fine-tuned model.

    Attributes:
        onnx_path: the model file (hash checked).
        model_id: ``manifest["id"]``, e.g. ``"ppocr-ft-1a2b3c4d5e6f"`` (reported in metrics and events).
        sha256: hex sha256 of ``onnx_path``.
        kind: recogniser family (``"ppocr"``).
        manifest: the whole manifest.
    """

    onnx_path: Path
    model_id: str
    sha256: str
    kind: str
    manifest: dict[str, Any]


def load_model_manifest(path: str | Path, *, kind: str | None = None) -> FineTunedModel:
    """Read ``path`` (a manifest or a folder with ``manifest.json``) and verify its model's hash.

    Raises:
        ModelIntegrityError: missing/unreadable manifest, wrong ``format`` or ``kind``, model
            file missing, or its sha256 differs from the manifest's.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"cannot read model manifest {path}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ModelIntegrityError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if kind is not None and manifest.get("kind") != kind:
        raise ModelIntegrityError(f"{path}: a {manifest.get('kind')!r} model, expected {kind!r}")
    onnx_path = path.parent / manifest["model"]
    if not onnx_path.is_file():
        raise ModelIntegrityError(f"{path}: model file {onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != manifest.get("sha256"):
        raise ModelIntegrityError(
            f"{onnx_path}: sha256 {actual[:12]}… differs from the manifest's {str(manifest.get('sha256'))[:12]}…")
    return FineTunedModel(onnx_path, manifest["id"], actual, manifest["kind"], manifest)

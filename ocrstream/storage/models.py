"""The model registry in the object store: ``ocrstream model register MANIFEST`` and ``ocrstream model list``.

A fine-tuned recogniser (``ocrstream model finetune``: ``model.onnx`` + ``manifest.json``, format
:data:`ocrstream.ocr.recognition.model_manifest.FORMAT`) is stored under ``models/<sha256>/``
(the model file's sha256, 64 hex) in the pipeline's bucket:

* ``models/<sha256>/model.onnx`` - the bytes whose sha256 names the folder (checked when read
  for upload, so a file changed after ``finetune`` is refused);
* ``models/<sha256>/manifest.json`` - the manifest as ``finetune`` wrote it (base model, data
  manifests and their hashes, settings, metrics with the gate), written last: a folder without
  it is an unfinished upload and is not listed.

Registering the same model again changes nothing (content-addressed). :func:`fetch_model` brings
a registered model back into a folder, verified, for serving (``OCRSTREAM_PPOCR_MODEL``).

The live model is a pointer in PostgreSQL (``model_promotions``, migration 0014): ``ocrstream
model promote SHA`` adds a row (:func:`promote`; a model that did not pass the gate needs
``force``), the newest row is live (:func:`live_model`). Recognize stages started with
``OCRSTREAM_FOLLOW_PROMOTED_MODEL`` poll it and switch between batches (services/recognize/stage.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrstream.errors import MissingObjectError
from ocrstream.ocr.recognition.model_manifest import (
    MANIFEST_NAME,
    ModelIntegrityError,
    int8_served,
    load_model_manifest,
)
from ocrstream.settings import Settings
from ocrstream.storage.objectstore import ObjectStore

__all__ = ["PREFIX", "GateNotPassedError", "RegisteredModel", "UnknownModelError", "cached_model", "compare_shadow",
           "fetch_model", "shadows",
           "gate_passed", "list_models", "live_model", "model_prefix", "promote", "promotion_history",
           "register_model", "resolve"]

PREFIX = "models/"
MODEL_FILE = "model.onnx"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class UnknownModelError(LookupError):
    """No registered model has that sha256 (or unambiguous prefix of it)."""


@dataclass(frozen=True)
class RegisteredModel:
    """A model in the registry: its sha256, its manifest, whether it was new when registered."""

    sha256: str
    manifest: dict[str, Any]
    new: bool = False

    @property
    def model_id(self) -> str:
        return str(self.manifest.get("id", ""))

    def summary(self) -> dict[str, Any]:
        """The fields ``ocrstream model list`` shows: sha256, id, kind, created, base, training
        lines, validation CER ci of base and tuned (%), whether it passed the gate, whether it serves in
        int8 (its manifest's ``int8.served``: :func:`ocrstream.training.finetune.int8_check`)."""
        metrics = self.manifest.get("metrics") or {}
        base, tuned = metrics.get("val_base") or {}, metrics.get("val_tuned") or {}
        return {"sha256": self.sha256, "id": self.model_id, "kind": self.manifest.get("kind"),
                "created": self.manifest.get("created"), "base": (self.manifest.get("base") or {}).get("name"),
                "train_lines": (self.manifest.get("data") or {}).get("train_lines"),
                "cer_ci_base": base.get("cer_ci"), "cer_ci_tuned": tuned.get("cer_ci"),
                "gate_passed": gate_passed(self.manifest),
                "int8": int8_served(self.manifest.get("int8"))}


def model_prefix(sha256: str) -> str:
    """``models/<sha256>/``; raises ValueError unless ``sha256`` is 64 lowercase hex."""
    if not _SHA.match(sha256):
        raise ValueError(f"not a sha256 (64 lowercase hex): {sha256!r}")
    return f"{PREFIX}{sha256}/"


def gate_passed(manifest: dict[str, Any]) -> bool:
    """Whether the model passed ``finetune``'s gate: its validation CER ci is not above the
    base's and the gate was not forced. False when the manifest lacks the metrics."""
    metrics = manifest.get("metrics") or {}
    base, tuned = (metrics.get("val_base") or {}).get("cer_ci"), (metrics.get("val_tuned") or {}).get("cer_ci")
    if base is None or tuned is None:
        return False
    return bool(tuned <= base and not metrics.get("gate_forced", False))


async def register_model(settings: Settings, manifest_path: str | Path) -> RegisteredModel:
    """Store the fine-tuned model of ``manifest_path`` (a ``manifest.json`` or its folder) under
    ``models/<sha256>/``: the model file, then the manifest.

    Raises:
        ModelIntegrityError: unreadable manifest, another format, model file missing or not
            matching the manifest's sha256 (also when it changed while being read).
        Connection errors of the object store (transient).
    """
    model = load_model_manifest(manifest_path)
    data = model.onnx_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != model.sha256:
        raise ModelIntegrityError(f"{model.onnx_path} changed while being registered (sha256 {sha[:12]}…)")
    prefix = model_prefix(sha)
    store = ObjectStore(settings)
    await store.ensure_bucket()
    if await store.exists(prefix + MANIFEST_NAME):
        return RegisteredModel(sha, await _manifest(store, sha), new=False)
    await store.put(prefix + MODEL_FILE, data, "application/octet-stream")
    manifest = {**model.manifest, "model": MODEL_FILE}
    await store.put(prefix + MANIFEST_NAME, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode(),
                    "application/json")
    return RegisteredModel(sha, manifest, new=True)


async def _manifest(store: ObjectStore, sha256: str) -> dict[str, Any]:
    try:
        raw = await store.get(model_prefix(sha256) + MANIFEST_NAME)
    except MissingObjectError:
        raise UnknownModelError(f"no registered model {sha256}") from None
    try:
        manifest: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise ModelIntegrityError(f"models/{sha256}/{MANIFEST_NAME} is not JSON: {exc}") from None
    return manifest


async def list_models(settings: Settings) -> list[RegisteredModel]:
    """Every registered model (those with a manifest), newest ``created`` first."""
    store = ObjectStore(settings)
    await store.ensure_bucket()
    shas = sorted({key[len(PREFIX):].split("/", 1)[0] for key in await store.list_keys(PREFIX)
                   if key.endswith("/" + MANIFEST_NAME)})
    models = [RegisteredModel(sha, await _manifest(store, sha)) for sha in shas if _SHA.match(sha)]
    return sorted(models, key=lambda m: str(m.manifest.get("created", "")), reverse=True)


async def resolve(settings: Settings, sha_or_prefix: str) -> RegisteredModel:
    """The registered model whose sha256 is, or starts with, ``sha_or_prefix`` (≥ 6 hex; or its ``id``).

    Raises UnknownModelError: none, or several match.
    """
    wanted = sha_or_prefix.strip().lower()
    found = [m for m in await list_models(settings)
             if (len(wanted) >= 6 and m.sha256.startswith(wanted)) or m.model_id == sha_or_prefix]
    if len(found) != 1:
        raise UnknownModelError(f"{len(found)} registered models match {sha_or_prefix!r}"
                                + ("" if found else ": see `ocrstream model list`"))
    return found[0]


async def fetch_model(settings: Settings, sha256: str, dest: str | Path) -> Path:
    """Download registered model ``sha256`` into ``dest`` (``model.onnx`` + ``manifest.json``),
    verified as at load; returns the manifest's path.

    Raises UnknownModelError (not registered) or ModelIntegrityError (the stored bytes differ).
    """
    store = ObjectStore(settings)
    manifest = await _manifest(store, sha256)
    try:
        data = await store.get(model_prefix(sha256) + MODEL_FILE)
    except MissingObjectError:
        raise ModelIntegrityError(f"models/{sha256}/{MODEL_FILE} is missing") from None
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MODEL_FILE).write_bytes(data)
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    load_model_manifest(dest)  # the sha256 check
    return dest / MANIFEST_NAME


# ---------------------------------------------------------------- the live model (PostgreSQL)

class GateNotPassedError(ValueError):
    """Promoting a model that did not pass ``finetune``'s gate without ``force``."""


async def promote(db: Any, model: RegisteredModel, who: str | None, *, force: bool = False) -> dict[str, Any]:
    """Make registered ``model`` the live one: a new row of ``model_promotions`` (migration 0014;
    the newest row is live). Returns the row as a dict.

    Raises:
        GateNotPassedError: the model did not pass the gate (:func:`gate_passed`) and not ``force``.
    """
    passed = gate_passed(model.manifest)
    if not passed and not force:
        raise GateNotPassedError(f"model {model.sha256[:12]}… ({model.model_id}) did not pass the fine-tuning gate "
                                 "(its validation CER ci is above the base's, or the gate was forced): use --force")
    row = await db.fetchrow("INSERT INTO model_promotions (sha256, model_id, promoted_by, gate_passed, forced)"
                            " VALUES ($1, $2, $3, $4, $5) RETURNING *", model.sha256, model.model_id, who, passed,
                            force and not passed)
    return _promotion(row)


def _promotion(row: Any) -> dict[str, Any]:
    return {"sha256": row["sha256"], "model_id": row["model_id"], "promoted_at": row["promoted_at"].isoformat(),
            "promoted_by": row["promoted_by"], "gate_passed": row["gate_passed"], "forced": row["forced"]}


async def live_model(db: Any) -> dict[str, Any] | None:
    """The newest promotion (see :func:`promote`), or None: none yet, or the store has not
    created the table yet."""
    import asyncpg

    try:
        row = await db.fetchrow("SELECT * FROM model_promotions ORDER BY id DESC LIMIT 1")
    except asyncpg.UndefinedTableError:
        return None
    return _promotion(row) if row else None


async def promotion_history(db: Any, limit: int = 20) -> list[dict[str, Any]]:
    """The ``limit`` newest promotions, newest (the live one) first."""
    rows = await db.fetch("SELECT * FROM model_promotions ORDER BY id DESC LIMIT $1", limit)
    return [_promotion(r) for r in rows]


async def cached_model(settings: Settings, sha256: str, cache_dir: str | Path) -> Path:
    """The manifest path of registered model ``sha256`` under ``cache_dir/<sha256>/``, downloaded
    (:func:`fetch_model`) unless a verified copy is there already."""
    folder = Path(cache_dir) / sha256
    try:
        if load_model_manifest(folder).sha256 == sha256:
            return folder / MANIFEST_NAME
    except ModelIntegrityError:
        pass
    return await fetch_model(settings, sha256, folder)


# ---------------------------------------------------------------- shadow evaluation (PostgreSQL)

_COMPARE = """
SELECT s.text AS shadow, coalesce(r.raw_text, r.text) AS live, r.verified_text, s.cpu_ms
FROM shadow_readings s JOIN regions r ON r.document_id = s.document_id AND r.region_id = s.region_id
WHERE s.sha256 = $1
"""


async def compare_shadow(db: Any, sha256: str) -> dict[str, Any]:
    """The shadow model ``sha256`` against the live one over the same regions (read by both):

    ``regions`` compared; ``agreement`` (fraction with the same text, whitespace-normalised);
    ``verified`` (how many of them a person verified) with ``cer_ci_shadow`` and ``cer_ci_live``
    against the verified text (None without any); ``cpu_ms_per_line`` of the shadow (mean
    process CPU ms per line of its batches); ``shadow_only``: regions the shadow read that the
    store has not (yet) got. Raises asyncpg's errors.
    """
    from ocrstream.ocr.evaluation import cer, normalize

    rows = await db.fetch(_COMPARE, sha256)
    total = await db.fetchval("SELECT count(*) FROM shadow_readings WHERE sha256 = $1", sha256)
    same = sum(normalize(r["shadow"], case_insensitive=False) == normalize(r["live"], case_insensitive=False)
               for r in rows)
    verified = [r for r in rows if r["verified_text"] is not None]
    refs = [r["verified_text"] for r in verified]
    return {"sha256": sha256, "regions": len(rows), "shadow_only": int(total) - len(rows),
            "agreement": same / len(rows) if rows else None, "verified": len(verified),
            "cer_ci_shadow": cer([r["shadow"] for r in verified], refs) if verified else None,
            "cer_ci_live": cer([r["live"] for r in verified], refs) if verified else None,
            "cpu_ms_per_line": sum(r["cpu_ms"] for r in rows) / len(rows) if rows else None}


async def shadows(db: Any) -> list[dict[str, Any]]:
    """Registered shadow runs (``model_shadows``): sha256, model id, consumer group, start; [] before
    the migration."""
    import asyncpg

    try:
        rows = await db.fetch("SELECT * FROM model_shadows ORDER BY started_at")
    except asyncpg.UndefinedTableError:
        return []
    return [{"sha256": r["sha256"], "model_id": r["model_id"], "consumer_group": r["consumer_group"],
             "started_at": r["started_at"].isoformat()} for r in rows]

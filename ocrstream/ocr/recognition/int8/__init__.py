"""The shipped PP-OCRv6 recogniser in int8, made on this machine from its own weights.

Issue 22's lever 2 ("int8 done properly"). A static QDQ model quantised whole read 5 points of CER
worse than float (``bench/bench_quantize.py``). ``bench/bench_int8_sensitivity.py`` found why and what
to keep in float:

* calibration by percentile (99.999) instead of min/max: whole-model int8 +0.16 point on 200 dev lines
  instead of +5;
* only the convolutions and matrix products in int8 (``QUANTISED_OPS``); the CTC head's MatMul in
  float (so :mod:`ocrstream.ocr.recognition.ctc_head` still cuts it to the charset);
* the 13 nodes whose quantisation cost the most CER, leave-one-out on 600 dev lines and kept in float
  greedily until within 0.05 point (:data:`FLOAT_NODES`);
* the 13 GELUs, five nodes each in the exported model, fused into one ``Gelu`` node before quantising
  (:mod:`ocrstream.ocr.runtime.gelu_fusion`): quantised as five nodes they were a quarter of the int8
  model's kernel time, as ONNX Runtime no longer fuses them once each use of their input has its own
  ``DequantizeLinear`` (:data:`RECIPE`).

Measured 2026-12-06 (1 thread, this class of host, one run each): 800 held-out dev lines (neither
scored for the choice nor calibrated on), one per call: CER ci 1.35 -> 1.43 %, WER ci 7.11 -> 7.34 %,
8.76 -> 6.65 CPU-ms per line (0.76x); the 60 dev pages through ``OCRPipeline``: CER ci 2.95 -> 2.99 %,
0.723 -> 0.605 CPU-s per page (0.84x).

What ships is the recipe, not a model: the activation ranges measured on 100 dev lines
(``ppocr_v6_rec_small.ranges.json``, onnxruntime's calibration cache format, 133 tensors) and the
node list. :func:`int8_model` applies them to the installed ``rapidocr`` model (checked by its
sha256) with ``onnxruntime.quantization`` and keeps the result in a cache folder: the first
recogniser of a machine spends a few CPU-seconds on it, later ones load the file. A model fine-tuned
from it gets the same recipe when its fine-tuning measured the int8 model within
:data:`INT8_CER_MARGIN` of its float one (manifest ``int8.served``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from importlib.resources import files
from pathlib import Path

__all__ = ["FLOAT_NODES", "INT8_CER_MARGIN", "MODEL_SHA256", "QUANTISED_OPS", "RANGES", "RECIPE", "TUNED_KEPT", "Int8Unavailable",
           "int8_model", "prune_tuned", "recipe_key"]

log = logging.getLogger(__name__)

#: sha256 of the model the ranges were measured on (rapidocr 3.10.0 ``PP-OCRv6_rec_small.onnx``).
MODEL_SHA256 = "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884"
#: onnxruntime calibration cache (percentile 99.999, 100 SROIE dev lines 601-700) of that model.
RANGES = files(__name__) / "ppocr_v6_rec_small.ranges.json"
#: operators quantised; everything else stays float.
QUANTISED_OPS = ["Conv", "MatMul"]
#: nodes kept in float (names in the model after ``quant_pre_process``), costliest first, and the CTC
#: head's MatMul (``MatMul.12``).
FLOAT_NODES = ["Conv.55", "Conv.18", "Conv.4", "Conv.21", "Conv.23", "Conv.3", "Conv.13", "Conv.16", "Conv.44",
               "Conv.56", "MatMul.4", "Conv.10", "Conv.15", "MatMul.12"]


#: a fine-tuned model serves in int8 when the int8 model's validation CER ci is at most this much above its float
#: model's (issue 22's accuracy budget for a lever: 0.1 point CER ci); ``ocrstream model finetune`` measures it.
INT8_CER_MARGIN = 0.001

#: int8 models of fine-tuned recognisers kept in the cache folder (the newest; :func:`prune_tuned`).
TUNED_KEPT = 4
_TUNED_NAME = re.compile(r"\.[0-9a-f]{16}\.int8\.[0-9a-f]{16}\.onnx$")

#: the recipe's steps beyond the ranges and nodes, part of the cached model's name: a machine that made
#: the model by an earlier recipe makes it again.
RECIPE = "gelu-fused"


class Int8Unavailable(RuntimeError):
    """The int8 recipe does not apply: another model than the one it was measured on."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ocrstream/int8`` (``~/.cache/...``), else ``<temp dir>/ocrstream-int8``."""
    base = os.environ.get("XDG_CACHE_HOME") or (str(Path.home() / ".cache") if Path.home().is_dir() else "")
    return Path(base) / "ocrstream" / "int8" if base else Path(tempfile.gettempdir()) / "ocrstream-int8"


def recipe_key() -> str:
    """16 hex digits naming the recipe (ranges, float nodes, :data:`RECIPE`): part of every cached int8
    model's name and of a fine-tuned model's manifest (``int8.recipe``)."""
    ranges = Path(str(RANGES)).read_bytes()
    return hashlib.sha256(ranges + "\n".join([*FLOAT_NODES, RECIPE]).encode()).hexdigest()[:16]


def int8_model(source: Path, cache_dir: Path | None = None, *, base_sha256: str | None = None) -> Path:
    """The int8 QDQ model of the shipped recogniser, or of a model fine-tuned from it (made once, then cached).

    A model fine-tuned by ``ocrstream model finetune`` is the shipped graph with new weights (node and
    tensor names unchanged), so the recipe applies to it as it is. With the backbone frozen (the
    default) the backbone's activation ranges are exactly the shipped model's; the tuned neck's and
    head's ranges are the shipped ones too, which is why the fine-tuning measures the int8 model on its
    validation set and records in its manifest whether it may serve (``int8.served``;
    :mod:`ocrstream.training.finetune`).

    Args:
        source: the float ONNX file: the model of :data:`MODEL_SHA256`, or one fine-tuned from it.
        cache_dir: where the model is kept (None: :func:`default_cache_dir`); written atomically.
        base_sha256: sha256 of the model ``source`` was fine-tuned from (its manifest's ``base.sha256``);
            None for the shipped model itself.

    Returns:
        Path of the int8 ONNX file (``(N, 3, 48, W)`` float32 in, the same softmax out); named after the
        recipe and, for a fine-tuned model, its own sha256.

    Raises:
        Int8Unavailable: neither ``source`` nor ``base_sha256`` is the model of :data:`MODEL_SHA256`.
        OSError: the cache folder cannot be written.
    """
    sha = _sha256(source)
    if MODEL_SHA256 not in (sha, base_sha256):
        raise Int8Unavailable(f"{source.name} is not the model the int8 ranges were measured on, nor tuned from it")
    own = "" if sha == MODEL_SHA256 else f".{sha[:16]}"
    folder = cache_dir or default_cache_dir()
    target = folder / f"{source.stem}{own}.int8.{recipe_key()}.onnx"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    log.info("making the int8 recogniser %s (once per machine and model; a few CPU-seconds)", target)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".making-") as tmp:
        made = _quantise(source, Path(str(RANGES)), Path(tmp))
        os.replace(made, target)
    if own:
        prune_tuned(folder)
    return target


def prune_tuned(folder: Path, keep: int | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest (by mtime) int8 models of fine-tuned recognisers in ``folder``,
    so that a stream of promoted models does not fill the disk (each ~6 MB); the shipped model's is kept.
    A process that already loaded a deleted file keeps reading it (the session holds it in memory).

    Args:
        keep: how many to keep (None: :data:`TUNED_KEPT`).

    Returns:
        The files deleted.
    """
    keep = TUNED_KEPT if keep is None else keep
    tuned = sorted((p for p in folder.glob("*.int8.*.onnx") if _TUNED_NAME.search(p.name)),
                   key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in tuned[keep:]:
        path.unlink(missing_ok=True)
    return tuned[keep:]


def _quantise(source: Path, ranges: Path, tmp: Path) -> Path:
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ocrstream.ocr.runtime.gelu_fusion import fuse_gelu

    # the shipped model is opset 11; per-channel QDQ needs DequantizeLinear's `axis` (opset 13)
    opset13, prepared, fused, out = tmp / "opset13.onnx", tmp / "prepared.onnx", tmp / "fused.onnx", tmp / "int8.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(source)), 13), str(opset13))
    quant_pre_process(str(opset13), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    fuse_gelu(model)  # after quant_pre_process, which names the nodes FLOAT_NODES lists
    onnx.save(model, str(fused))
    quantize_static(str(fused), str(out), None, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.Percentile,
                    op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=FLOAT_NODES,
                    calibration_cache_path=str(ranges))
    return out

"""CER/WER of a recogniser on labelled line manifests: ``ocrstream model evaluate MODEL --set MANIFEST``.

MODEL: ``ppocr`` (the shipped PP-OCRv6 model), a fine-tuned model's ``manifest.json`` or folder
(hash checked), a ``.onnx`` with the PP-OCR contract, or a TrOCR ONNX folder from
``ocrstream model export-trocr`` (has ``encoder_model.onnx``). The recogniser runs exactly as the
recognize stage serves it (same pre-processing, decoding, charset and look-alike repair).
Scores from :mod:`ocrstream.ocr.evaluation`: CER and WER micro-averaged over the set, case-insensitive
(``ci``) and case-sensitive (``cs``), and CER ci with spaces removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ocrstream.ocr.evaluation import cer, wer
from ocrstream.ocr.recognition.recognizer import Recognizer
from ocrstream.ocr.recognition.registry import load_recognizer
from ocrstream.training.manifest import LineSample, load_image

__all__ = ["SetScore", "format_scores", "load_for_eval", "score", "score_texts"]


@dataclass(frozen=True)
class SetScore:
    """Scores of one set. Rates are fractions (0.02 = 2 %); ``cpu_s`` = process CPU seconds."""

    name: str
    lines: int
    cer_ci: float
    wer_ci: float
    cer_cs: float
    wer_cs: float
    cer_ci_nospace: float
    cpu_s: float

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready), rates rounded to 5 decimals."""
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def score_texts(name: str, hyps: Sequence[str], refs: Sequence[str], cpu_s: float = 0.0) -> SetScore:
    """:class:`SetScore` of hypotheses against references (:mod:`ocrstream.ocr.evaluation` definitions)."""
    return SetScore(name, len(refs), cer(hyps, refs, ci=True), wer(hyps, refs, ci=True), cer(hyps, refs, ci=False),
                    wer(hyps, refs, ci=False), cer(hyps, refs, ci=True, ignore_spaces=True), cpu_s)


def score(recognizer: Recognizer, samples: Sequence[LineSample], name: str, *, chunk: int = 64) -> tuple[SetScore, list[str]]:
    """Read every sample (``chunk`` images in memory at a time) and score; returns ``(score, hypotheses)``.

    Raises:
        ocrstream.training.manifest.ManifestError: an image cannot be read.
    """
    t0 = time.process_time()
    hyps: list[str] = []
    for start in range(0, len(samples), chunk):
        images = [load_image(s) for s in samples[start:start + chunk]]
        hyps += [r.text for r in recognizer.recognize(images)]
    return score_texts(name, hyps, [s.text for s in samples], time.process_time() - t0), hyps


def load_for_eval(model: str, *, threads: int = 1) -> Recognizer:
    """The recogniser named by ``model`` (see module docstring), on the CPU with ``threads`` threads.

    Raises:
        FileNotFoundError: ``model`` is neither ``ppocr`` nor an existing path.
        ocrstream.ocr.recognition.model_manifest.ModelIntegrityError: a fine-tuned model fails its hash check.
    """
    if model in ("ppocr", "base"):
        return load_recognizer("ppocr", device="cpu", threads=threads)
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{model}: not 'ppocr' and no such file or folder")
    if path.is_dir() and (path / "encoder_model.onnx").is_file():
        return load_recognizer("trocr", model_dir=path, device="cpu", threads=threads)
    return load_recognizer("ppocr", model=path, device="cpu", threads=threads)


def format_scores(rows: Sequence[tuple[str, SetScore]]) -> str:
    """A plain-text table: model, set, lines, CER/WER ci and cs (%), CER ci without spaces, CPU-s."""
    head = f"{'model':<28} {'set':<32} {'lines':>5} {'CER ci':>7} {'WER ci':>7} {'CER cs':>7} {'WER cs':>7} {'CER ci nosp':>11} {'CPU-s':>6}"
    lines = [head, "-" * len(head)]
    for model, s in rows:
        lines.append(f"{model[-28:]:<28} {s.name[-32:]:<32} {s.lines:>5} {100 * s.cer_ci:>6.2f}% {100 * s.wer_ci:>6.2f}% "
                     f"{100 * s.cer_cs:>6.2f}% {100 * s.wer_cs:>6.2f}% {100 * s.cer_ci_nospace:>10.2f}% {s.cpu_s:>6.1f}")
    return "\n".join(lines)

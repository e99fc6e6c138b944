"""The TrOCR recogniser: model folder, encoder + generation per batch, :class:`LineReading` output.

Confidence: every generated token gets p = softmax(logits)[token] (raw logits, before the
processors). :class:`TrOCROutput` reports ``confidence`` = exp(mean log p over the generated
tokens, EOS included) and ``min_prob``. In :class:`LineReading` each character gets the
probability of the token that produced it (a token's probability is spread to all of its
characters), and ``LineReading.confidence`` is, as the interface defines it, the mean of those
character probabilities.

Character positions: TrOCR has no alignment between tokens and pixels, so ``char_x`` spreads
the characters evenly over the crop width (x_i = (i + 0.5) * W / n). For long lines split into
chunks, the spreading is done per chunk, which localises them better.

Long lines and the crop budget (:mod:`ocrstream.ocr.recognition.longlines`, shared with every
recogniser): a crop whose aspect ratio (w / h) exceeds ``max_ratio`` (8) is cut into overlapping
chunks of aspect ratio ``target_ratio`` (6) with ``overlap_ratio`` (0.5) overlap, and the chunk
texts are merged at the overlap -- docTR's method and constants; crops with a side < 2 px read
as empty; readings are cut to ``max_chars``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ocrstream.ocr.recognition.longlines import (
    DOCTR_MAX_RATIO,
    DOCTR_OVERLAP_RATIO,
    DOCTR_TARGET_RATIO,
    CropBudget,
    as_bgr,
    read_within_budget,
)
from ocrstream.ocr.recognition.recognizer import LineReading
from ocrstream.ocr.recognition.trocr.decoder import KVCacheDecoder
from ocrstream.ocr.recognition.trocr.generation import GenerationSettings, Hypothesis, beam_search, greedy_search
from ocrstream.ocr.recognition.trocr.image import ImageProcessorSpec
from ocrstream.ocr.recognition.trocr.tokenizer import TokenDecoder
from ocrstream.ocr.runtime.onnx_session import Device, chosen_provider, make_session

__all__ = ["MANIFEST_NAME", "MODEL_DIR_ENV", "TrOCROutput", "TrOCRRecognizer", "resolve_model_dir"]

log = logging.getLogger(__name__)

#: environment variable naming the exported model folder when no ``model_dir`` is given.
MODEL_DIR_ENV = "OCRSTREAM_TROCR_MODEL_DIR"
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TrOCROutput:
    """Decoded result of one image.

    Attributes:
        text: decoded text (special tokens removed).
        token_ids: generated ids (decoder start token excluded; EOS included when emitted).
        token_probs: p(token) per id, in [0, 1] (softmax of the raw logits).
        char_probs: for each character of ``text`` the probability of its token.
        score: transformers' sequence score (greedy: sum log p; beam: sum log p / len ** length_penalty).
    """

    text: str
    token_ids: tuple[int, ...]
    token_probs: tuple[float, ...]
    char_probs: tuple[float, ...]
    score: float

    @property
    def confidence(self) -> float:
        """exp(mean log p) over ``token_probs`` (geometric mean), 0.0 when nothing was generated."""
        if not self.token_probs:
            return 0.0
        return float(np.exp(np.mean(np.log(np.maximum(self.token_probs, 1e-45)))))

    @property
    def min_prob(self) -> float:
        """Smallest token probability (0.0 when nothing was generated)."""
        return float(min(self.token_probs)) if self.token_probs else 0.0


def resolve_model_dir(model_dir: str | os.PathLike[str] | None) -> Path:
    """``model_dir`` or ``$OCRSTREAM_TROCR_MODEL_DIR``, checked to hold a ``manifest.json``.

    Raises:
        ValueError: neither is set.
        FileNotFoundError: the folder or its manifest does not exist.
    """
    raw = model_dir if model_dir is not None else os.environ.get(MODEL_DIR_ENV, "").strip() or None
    if raw is None:
        raise ValueError(
            f"TrOCR needs an exported model folder: pass model_dir=... or set {MODEL_DIR_ENV} "
            "(create one with: ocrstream model export-trocr SRC OUT)"
        )
    path = Path(raw).expanduser()
    if not (path / MANIFEST_NAME).is_file():
        raise FileNotFoundError(
            f"{path / MANIFEST_NAME} not found ({MODEL_DIR_ENV} / model_dir must be a folder written by "
            "ocrstream model export-trocr)"
        )
    return path


class TrOCRRecognizer:
    """TrOCR on ONNX Runtime (see the module docstring for the model contract and algorithms).

    Args:
        model_dir: exported model folder; None reads ``$OCRSTREAM_TROCR_MODEL_DIR``.
        max_batch_size: crops per encoder/decoder batch (beam search runs
            ``max_batch_size * num_beams`` decoder rows).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``ocrstream.ocr.runtime.onnx_session``).
        threads: intra-op threads; None reads ``$OCRSTREAM_ORT_THREADS``.
        decoder: ``"auto"`` (merged decoder if exported, else the split pair), ``"merged"``, ``"split"``.
        num_beams, max_new_tokens, length_penalty, early_stopping, min_new_tokens,
            no_repeat_ngram_size: override the model's ``generation_config.json``
            (see :class:`GenerationSettings`); ``max_new_tokens`` is capped so that the
            sequence fits the decoder's position table.
        split_long_lines: split crops with w / h > ``max_ratio`` (docTR's method).
        max_ratio, target_ratio, overlap_ratio: the splitting constants (:mod:`ocrstream.ocr.recognition.longlines`).
        max_chars: characters kept per reading (``OCRSTREAM_MAX_REGION_CHARS``).

    Raises:
        ValueError: no model folder given; bad settings; the manifest is from another format.
        FileNotFoundError: a model file is missing.
    """

    name = "trocr"

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        max_batch_size: int = 16,
        device: Device = "auto",
        threads: int | None = None,
        decoder: str = "auto",
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        min_new_tokens: int | None = None,
        no_repeat_ngram_size: int | None = None,
        split_long_lines: bool = True,
        max_ratio: float = DOCTR_MAX_RATIO,
        target_ratio: float = DOCTR_TARGET_RATIO,
        overlap_ratio: float = DOCTR_OVERLAP_RATIO,
        max_chars: int = 1000,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model_dir = resolve_model_dir(model_dir)
        self.manifest = json.loads((self.model_dir / MANIFEST_NAME).read_text())
        if not str(self.manifest.get("format", "")).startswith("ocrstream-trocr/"):
            raise ValueError(f"{self.model_dir / MANIFEST_NAME} is not an ocrstream TrOCR manifest")
        self.max_batch_size = max_batch_size
        self.split_long_lines = split_long_lines
        self.max_ratio, self.target_ratio, self.overlap_ratio = max_ratio, target_ratio, overlap_ratio
        self.max_chars = max_chars
        self.budget  # noqa: B018 - validates the split settings now
        files = {k: v["path"] for k, v in self.manifest["files"].items()}
        if decoder == "auto":
            decoder = "merged" if "decoder_merged" in files else "split"
        if decoder not in ("merged", "split"):
            raise ValueError(f"decoder must be 'auto', 'merged' or 'split', got {decoder!r}")
        need = ["encoder", "decoder_merged"] if decoder == "merged" else ["encoder", "decoder", "decoder_with_past"]
        absent = [k for k in need if k not in files]
        if absent:
            raise FileNotFoundError(f"{self.model_dir}: manifest lists no {absent} (decoder={decoder!r})")

        self.image_spec = ImageProcessorSpec.from_dict(
            json.loads((self.model_dir / "preprocessor_config.json").read_text()))
        gen_path = self.model_dir / "generation_config.json"
        gen = GenerationSettings.from_generation_config(json.loads(gen_path.read_text()) if gen_path.is_file() else {})
        overrides: dict[str, Any] = {k: v for k, v in dict(
            num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
            early_stopping=early_stopping, min_new_tokens=min_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size).items() if v is not None}
        self.generation = self._capped(replace(gen, **overrides))

        tokens = self.manifest["special_tokens"]
        self.start_id = int(self.manifest["decoder_start_token_id"])
        self.eos_id = int(tokens["eos_token_id"])
        self.pad_id = int(tokens["pad_token_id"]) if tokens.get("pad_token_id") is not None else self.eos_id
        self.tokenizer = TokenDecoder(self.model_dir)

        self._encoder = make_session(self.model_dir / files["encoder"], device=device, threads=threads)
        self._decoder = KVCacheDecoder(self.model_dir, files, decoder, device, threads,
                                 bool(self.manifest.get("merged_past_branch_reads_encoder_states", True)))
        self.decoder_mode = decoder
        self.provider = chosen_provider(self._encoder)
        log.info("trocr %s: provider=%s decoder=%s quantized=%s %s", self.model_dir, self.provider, decoder,
                 self.manifest.get("quantized"), self.generation)

    def _capped(self, s: GenerationSettings) -> GenerationSettings:
        limit = int(self.manifest.get("max_position_embeddings") or 0) - 1
        if limit > 0 and s.max_new_tokens > limit:
            log.warning("max_new_tokens %d exceeds the decoder's %d positions; capped", s.max_new_tokens, limit + 1)
            return replace(s, max_new_tokens=limit)
        return s

    # -- model calls ---------------------------------------------------------------------------
    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 BGR crops -> ``(N, 3, h, w)`` float32 model input (see :class:`ImageProcessorSpec`)."""
        return self.image_spec(images_bgr)

    def generate_from_pixels(self, pixel_values: np.ndarray, **overrides: Any) -> list[TrOCROutput]:
        """Decode ``(N, 3, h, w)`` float32 ``pixel_values`` in one batch.

        Args:
            overrides: :class:`GenerationSettings` fields for this call only.

        Returns:
            One :class:`TrOCROutput` per row.
        """
        s = self._capped(replace(self.generation, **overrides)) if overrides else self.generation
        if len(pixel_values) == 0:
            return []
        pixels = np.ascontiguousarray(pixel_values, np.float32)
        enc = self._encoder.run(["last_hidden_state"], {"pixel_values": pixels})[0]
        if s.num_beams == 1:
            hyps = greedy_search(self._decoder, enc, s, self.start_id, self.eos_id)
        else:
            hyps = beam_search(self._decoder, enc, s, self.start_id, self.eos_id, self.pad_id)
        return [self._to_output(h) for h in hyps]

    def _to_output(self, h: Hypothesis) -> TrOCROutput:
        probs = [math.exp(v) for v in h.logps]
        text, owner = self.tokenizer.decode_with_owners(h.ids)
        return TrOCROutput(text, tuple(h.ids), tuple(probs), tuple(probs[o] for o in owner), h.score)

    def generate(self, crops: Sequence[np.ndarray], **overrides: Any) -> list[TrOCROutput]:
        """Read whole crops (no long-line splitting), batching by ``max_batch_size``; input order.

        Args:
            crops: ``(H, W, 3)`` uint8 BGR (grey / BGRA accepted), non-empty.
            overrides: :class:`GenerationSettings` fields for this call only.
        """
        images = [as_bgr(c) for c in crops]
        order = sorted(range(len(images)), key=lambda i: images[i].shape[1] / max(1, images[i].shape[0]))
        out: list[TrOCROutput | None] = [None] * len(images)
        for lo in range(0, len(order), self.max_batch_size):
            idx = order[lo : lo + self.max_batch_size]
            results = self.generate_from_pixels(self.preprocess([images[i] for i in idx]), **overrides)
            for i, r in zip(idx, results):
                out[i] = r
        return out  # type: ignore[return-value]

    # -- Recognizer protocol -------------------------------------------------------------------
    @property
    def budget(self) -> CropBudget:
        """The crop budget from the current split settings (``split_long_lines`` False: no split)."""
        max_ratio = self.max_ratio if self.split_long_lines else math.inf
        return CropBudget(max_ratio, min(self.target_ratio, max_ratio), self.overlap_ratio, self.max_chars)

    def recognize(self, crops: Sequence[np.ndarray]) -> list[LineReading]:
        """Read line crops ``(H, W, 3)`` uint8 BGR; results in input order.

        Within the crop budget (:mod:`.longlines`): crops with w / h > ``max_ratio`` are read in
        overlapping chunks whose texts are merged, crops with a side < 2 px read as empty,
        readings are cut to ``max_chars``.

        Raises:
            ValueError: a crop is not 2-D/3-D image-shaped.
        """
        return read_within_budget(crops, self._read, self.budget)

    def _read(self, pieces: list[np.ndarray]) -> list[LineReading]:
        """One reading per piece, in one :meth:`generate` call; characters spread evenly over
        the piece's width (TrOCR has no alignment)."""
        readings = []
        for out, piece in zip(self.generate(pieces), pieces):
            n, w = len(out.text), piece.shape[1]
            readings.append(LineReading.from_chars(out.text, out.char_probs, [(i + 0.5) * w / n for i in range(n)]))
        return readings

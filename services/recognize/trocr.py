"""TrOCR (VisionEncoderDecoder: ViT/BEiT/DeiT encoder + TrOCR decoder) text-line recogniser on ONNX Runtime.

Runtime needs neither torch nor transformers: onnxruntime sessions, the ``tokenizers``
library (``tokenizer.json``; extra ``ocrstream[trocr]``), Pillow (the resize only), OpenCV
and numpy. The model folder is written by
:func:`services.recognize.trocr_export.export_trocr` (``ocrstream model export-trocr``)
and holds ``manifest.json`` (file names, special token ids, shapes, sha256 of each ONNX
file), ``encoder_model.onnx``, ``decoder_model_merged.onnx`` (and/or the split pair
``decoder_model.onnx`` + ``decoder_with_past_model.onnx``), ``tokenizer.json`` (+
``tokenizer_config.json``), ``preprocessor_config.json`` and ``generation_config.json``.
The ONNX input/output names are optimum's (``pixel_values`` -> ``last_hidden_state``;
``input_ids``, ``encoder_hidden_states``, ``past_key_values.{i}.{decoder|encoder}.{key|value}``,
``use_cache_branch`` -> ``logits``, ``present.{i}.{decoder|encoder}.{key|value}``).

Pipeline per batch of crops (at most ``max_batch_size``):

* pre-processing = the checkpoint's ``ViTImageProcessor`` (transformers 4.57
  ``image_processing_vit.py``, bit-exact): BGR -> RGB (OpenCV), resize to ``size`` with
  Pillow's ``Image.resize`` and the config's ``resample`` filter (the very call
  transformers makes, see :func:`pil_resize`), then in numpy ``x * rescale_factor``
  computed in float64 and cast to float32, ``(x - mean) / std`` in float32, CHW;
* the encoder runs once per batch;
* the decoder runs with a KV cache: one call without past for the first token (this is
  where the cross-attention keys/values are computed; they are kept for the whole
  search, because the merged decoder's with-past branch returns constant placeholders
  for ``present.*.encoder.*``), then one call per token with past;
* greedy search or beam search, ported from transformers 4.57
  ``generation/utils.py`` (``GenerationMixin._sample`` with ``do_sample=False`` and
  the vectorised ``GenerationMixin._beam_search``): same top-``2 * num_beams``
  candidate selection, ``length_penalty`` (score = sum log p / generated_len **
  length_penalty, generated_len counting the EOS token), ``early_stopping``
  (True / False / "never") and its heuristic, ``max_new_tokens``; supported logits
  processors: ``min_new_tokens`` and ``no_repeat_ngram_size``. Sequences that finished
  (greedy) or batch items whose result can no longer change (beam) are dropped from
  the decoder batch, which changes no output;
* tokens are decoded with ``tokenizers`` ``decode(skip_special_tokens=True)`` plus
  transformers' ``clean_up_tokenization`` when ``tokenizer_config.json`` asks for it,
  i.e. transformers' ``batch_decode(..., skip_special_tokens=True)``.

Confidence: every generated token gets p = softmax(logits)[token] (raw logits, before
the processors). :class:`TrOCROutput` reports ``confidence`` = exp(mean log p over the
generated tokens, EOS included) and ``min_prob``. In :class:`LineReading` each
character gets the probability of the token that produced it (a token's probability is
spread to all of its characters), and ``LineReading.confidence`` is, as the interface
defines it, the mean of those character probabilities.

Character positions: TrOCR has no alignment between tokens and pixels, so ``char_x``
spreads the characters evenly over the crop width (x_i = (i + 0.5) * W / n). For long
lines split into chunks, the spreading is done per chunk, which localises them better.

Long lines and the crop budget (:mod:`.longlines`, shared with every recogniser): a crop
whose aspect ratio (w / h) exceeds ``max_ratio`` (8) is cut into overlapping chunks of aspect
ratio ``target_ratio`` (6) with ``overlap_ratio`` (0.5) overlap, and the chunk texts are
merged at the overlap -- docTR's method and constants; crops with a side < 2 px read as empty;
readings are cut to ``max_chars``.
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

import cv2
import numpy as np

from services.core.onnx_session import chosen_provider, make_session
from services.recognize.longlines import (DOCTR_MAX_RATIO, DOCTR_OVERLAP_RATIO, DOCTR_TARGET_RATIO, CropBudget,
                                          as_bgr, read_within_budget)
from services.recognize.recognizer import LineReading

__all__ = [
    "MANIFEST_NAME",
    "MODEL_DIR_ENV",
    "GenerationSettings",
    "ImageProcessorSpec",
    "TokenDecoder",
    "TrOCROutput",
    "TrOCRRecognizer",
    "pil_resize",
    "resolve_model_dir",
]

log = logging.getLogger(__name__)

#: environment variable naming the exported model folder when no ``model_dir`` is given.
MODEL_DIR_ENV = "OCRSTREAM_TROCR_MODEL_DIR"
MANIFEST_NAME = "manifest.json"
#: used when neither the caller nor generation_config.json sets a length. transformers'
#: own default (max_length=20, i.e. 19 new tokens) truncates ordinary receipt lines.
DEFAULT_MAX_NEW_TOKENS = 64
_NEG = np.float32(-1.0e9)  # transformers' mask value in beam search


# ----------------------------------------------------------------------------------------------
# Pre-processing: PIL-exact resize + ViTImageProcessor arithmetic
# ----------------------------------------------------------------------------------------------

#: PIL resample codes (NEAREST=0, LANCZOS=1, BILINEAR=2, BICUBIC=3, BOX=4, HAMMING=5).
PIL_FILTERS = (0, 1, 2, 3, 4, 5)


def pil_resize(img: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize ``(H, W, 3)`` uint8 with ``PIL.Image.resize(size, resample)``, as transformers does.

    transformers' ``image_transforms.resize`` converts uint8 arrays to a PIL image and calls
    ``Image.resize(size, resample, reducing_gap=None)``; calling the same function is the only
    way to be bit-exact for every Pillow version (Pillow 13 picks the order of its two
    separable passes by itself, so a numpy re-implementation of ``Resample.c`` drifts by 1
    grey level on some sizes). Pillow is a runtime dependency of ocrstream anyway.

    Args:
        img: ``(H, W, 3)`` uint8 (RGB or BGR: channels are resized independently).
        size: ``(width, height)`` in px, as PIL takes it.
        resample: PIL filter code, see :data:`PIL_FILTERS`.

    Raises:
        ValueError: unknown ``resample`` or an empty image / size.
    """
    from PIL import Image

    if resample not in PIL_FILTERS:
        raise ValueError(f"unknown PIL resample filter {resample}")
    if min(size) < 1 or img.size == 0:
        raise ValueError(f"cannot resize {img.shape} to {size}")
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(
        (int(size[0]), int(size[1])), resample=resample, reducing_gap=None))


@dataclass(frozen=True)
class ImageProcessorSpec:
    """The parts of a ``ViTImageProcessor`` config (``preprocessor_config.json``) that TrOCR uses.

    Attributes:
        height, width: model input size in px.
        resample: PIL filter code (2 = bilinear in microsoft/trocr-* configs).
        do_resize, do_rescale, do_normalize: the processor's switches.
        rescale_factor: multiplier applied to uint8 values (1/255).
        mean, std: per-channel normalisation, RGB order.
    """

    height: int = 384
    width: int = 384
    resample: int = 2
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ImageProcessorSpec:
        """Parse a ``preprocessor_config.json`` dict.

        Raises:
            ValueError: ``size`` is not ``{"height", "width"}`` or an int (square).
        """
        size = cfg.get("size", {"height": 384, "width": 384})
        if isinstance(size, int):
            height = width = size
        elif isinstance(size, dict) and {"height", "width"} <= set(size):
            height, width = int(size["height"]), int(size["width"])
        else:
            raise ValueError(f"unsupported image processor size {size!r}; expected {{'height', 'width'}}")
        mean = cfg.get("image_mean", [0.5, 0.5, 0.5])
        std = cfg.get("image_std", [0.5, 0.5, 0.5])
        mean = [mean] * 3 if isinstance(mean, (int, float)) else mean
        std = [std] * 3 if isinstance(std, (int, float)) else std
        return cls(
            height=height,
            width=width,
            resample=int(cfg.get("resample", 2)),
            do_resize=bool(cfg.get("do_resize", True)),
            do_rescale=bool(cfg.get("do_rescale", True)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            do_normalize=bool(cfg.get("do_normalize", True)),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
        )

    def __call__(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """``(H, W, 3)`` uint8 BGR crops -> ``(N, 3, height, width)`` float32 pixel_values.

        Equal to ``ViTImageProcessor(...)(rgb_images, return_tensors="np").pixel_values``.
        """
        out = np.empty((len(images_bgr), 3, self.height, self.width), dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        for k, img in enumerate(images_bgr):
            rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if self.do_resize:
                rgb = pil_resize(rgb, (self.width, self.height), self.resample)
            if self.do_rescale:
                x = (rgb.astype(np.float64) * self.rescale_factor).astype(np.float32)
            else:
                x = rgb.astype(np.float32)
            if self.do_normalize:
                x = (x - mean) / std
            out[k] = x.transpose(2, 0, 1)
        return out


# ----------------------------------------------------------------------------------------------
# Generation settings, tokenizer
# ----------------------------------------------------------------------------------------------

#: generation_config.json keys this runtime ignores, with the value meaning "off".
_UNSUPPORTED_GENERATION = {
    "do_sample": False, "repetition_penalty": 1.0, "bad_words_ids": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "num_beam_groups": 1, "encoder_no_repeat_ngram_size": 0, "exponential_decay_length_penalty": None,
    "sequence_bias": None, "renormalize_logits": False, "constraints": None, "force_words_ids": None,
}


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings, with transformers ``GenerationConfig`` meanings.

    Attributes:
        num_beams: 1 = greedy search, > 1 = beam search.
        max_new_tokens: generated tokens at most (EOS included).
        length_penalty: beam score = sum log p / generated_len ** length_penalty.
        early_stopping: True (stop an input once ``num_beams`` hypotheses finished), False
            (transformers' heuristic) or "never" (canonical beam search).
        min_new_tokens: EOS is forbidden before this many new tokens.
        no_repeat_ngram_size: forbid repeating any n-gram of this size (0 = off).
    """

    num_beams: int = 1
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")

    @classmethod
    def from_generation_config(cls, cfg: dict[str, Any]) -> GenerationSettings:
        """Settings from a ``generation_config.json`` dict (unset keys: transformers' defaults,
        except the length: ``max_new_tokens``, else ``max_length - 1``, else
        :data:`DEFAULT_MAX_NEW_TOKENS`). Unsupported non-default keys are logged and ignored."""
        for key, off in _UNSUPPORTED_GENERATION.items():
            if cfg.get(key, off) not in (off, [], {}):
                log.warning("generation_config %s=%r is not supported by the ONNX TrOCR runtime; ignored",
                            key, cfg[key])
        if cfg.get("max_new_tokens"):
            max_new = int(cfg["max_new_tokens"])
        elif cfg.get("max_length"):
            max_new = int(cfg["max_length"]) - 1
        else:
            max_new = DEFAULT_MAX_NEW_TOKENS
        min_new = int(cfg.get("min_new_tokens") or max(0, int(cfg.get("min_length") or 0) - 1))
        return cls(
            num_beams=int(cfg.get("num_beams", 1)),
            max_new_tokens=max(1, max_new),
            length_penalty=float(cfg.get("length_penalty", 1.0)),
            early_stopping=cfg.get("early_stopping") if cfg.get("early_stopping") is not None else False,
            min_new_tokens=min_new,
            no_repeat_ngram_size=int(cfg.get("no_repeat_ngram_size") or 0),
        )


# transformers PreTrainedTokenizerBase.clean_up_tokenization (4.57)
_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class TokenDecoder:
    """``tokenizer.json`` decoding equal to transformers' ``batch_decode(skip_special_tokens=True)``.

    Args:
        model_dir: folder with ``tokenizer.json`` and optionally ``tokenizer_config.json``
            (its ``clean_up_tokenization_spaces``, default False as in transformers 4.57).

    Raises:
        FileNotFoundError: no ``tokenizer.json``.
    """

    def __init__(self, model_dir: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(f"{exc}: the TrOCR runtime needs the tokenizers library "
                              "(pip install 'ocrstream[trocr]')") from exc

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing (re-export the model with ocrstream model export-trocr)")
        self._tok = Tokenizer.from_file(str(path))
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.clean_up = bool(cfg.get("clean_up_tokenization_spaces", False))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens removed."""
        text = self._tok.decode(list(ids), skip_special_tokens=True)
        if self.clean_up:
            for a, b in _CLEANUP:
                text = text.replace(a, b)
        return text

    def decode_with_owners(self, ids: Sequence[int]) -> tuple[str, list[int]]:
        """``(text, owner)``: ``owner[c]`` = index in ``ids`` of the token that produced character c.

        Ownership comes from the lengths of the decoded prefixes ``ids[:k]`` (monotone-clamped),
        which also handles byte-level tokens that only complete a character together.
        """
        text = self.decode(ids)
        owner = [0] * len(text)
        prev = 0
        for k in range(len(ids)):
            n = min(len(text), max(prev, len(self.decode(ids[: k + 1])))) if k + 1 < len(ids) else len(text)
            for c in range(prev, n):
                owner[c] = k
            prev = n
        return text, owner


# ----------------------------------------------------------------------------------------------
# ONNX decoder wrapper (merged or split), search
# ----------------------------------------------------------------------------------------------

class _Decoder:
    """First step (no past) and next steps (with past) over optimum's decoder file(s)."""

    def __init__(self, model_dir: Path, files: dict[str, str], mode: str, device: str, threads: int | None,
                 step_reads_states: bool = True):
        if mode == "merged":
            self.first_sess = self.step_sess = make_session(
                model_dir / files["decoder_merged"], device=device, threads=threads)
        else:
            self.first_sess = make_session(model_dir / files["decoder"], device=device, threads=threads)
            self.step_sess = make_session(model_dir / files["decoder_with_past"], device=device, threads=threads)
        self.merged = mode == "merged"
        ins = {i.name: i for i in self.step_sess.get_inputs()}
        self.past_names = [n for n in ins if n.startswith("past_key_values.")]
        self.self_past = [n for n in self.past_names if ".decoder." in n]
        self.cross_past = [n for n in self.past_names if ".encoder." in n]
        shape = ins[self.self_past[0]].shape
        self.num_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.self_present = [n.replace("past_key_values.", "present.") for n in self.self_past]
        self.cross_present = [n.replace("past_key_values.", "present.") for n in self.cross_past]
        first_outs = {o.name for o in self.first_sess.get_outputs()}
        missing = [n for n in self.self_present + self.cross_present if n not in first_outs]
        if missing:
            raise ValueError(f"decoder outputs {missing[:3]}... missing: not an optimum TrOCR export")
        self.hidden = int(next(i for i in self.first_sess.get_inputs() if i.name == "encoder_hidden_states").shape[2])
        # optimum's merged decoder: the with-past branch does not read encoder_hidden_states
        # (the exporter records this in the manifest); then a (1, 1, D) stub is fed instead
        self._step_needs_states = self.merged and step_reads_states

    def first(self, input_ids: np.ndarray, enc: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """``(n, 1)`` ids + ``(n, S, D)`` encoder states -> logits ``(n, V)``, self KV, cross KV."""
        feeds: dict[str, Any] = {"input_ids": input_ids, "encoder_hidden_states": enc}
        if self.merged:
            empty = np.zeros((input_ids.shape[0], self.num_heads, 0, self.head_dim), dtype=np.float32)
            feeds.update(dict.fromkeys(self.past_names, empty))
            feeds["use_cache_branch"] = np.zeros(1, dtype=bool)
        outs = self.first_sess.run(["logits", *self.self_present, *self.cross_present], feeds)
        n = len(self.self_present)
        return outs[0][:, -1], outs[1 : 1 + n], outs[1 + n :]

    def step(self, input_ids: np.ndarray, self_kv: list[np.ndarray], cross_kv: list[np.ndarray],
             enc: np.ndarray | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One token per row with past -> logits ``(n, V)``, grown self KV (cross KV unchanged)."""
        feeds: dict[str, Any] = {"input_ids": input_ids}
        feeds.update(zip(self.self_past, self_kv))
        feeds.update(zip(self.cross_past, cross_kv))
        if self.merged:
            feeds["use_cache_branch"] = np.ones(1, dtype=bool)
            # the with-past branch ignores encoder_hidden_states (checked at load): feed a stub
            stub = np.zeros((1, 1, self.hidden), np.float32)
            feeds["encoder_hidden_states"] = enc if self._step_needs_states else stub
        outs = self.step_sess.run(["logits", *self.self_present], feeds)
        return outs[0][:, -1], outs[1:]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values per row of 2-D ``x``, sorted descending (like ``torch.topk``)."""
    rows = np.arange(x.shape[0])[:, None]
    if k < x.shape[1]:
        part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    order = np.argsort(-x[rows, part], axis=1, kind="stable")
    return part[rows, order]


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[b, idx[b, j], ...]`` for 2-D/3-D ``a`` (transformers ``_gather_beams``)."""
    return a[np.arange(idx.shape[0])[:, None], idx]


def _banned_ngram_tokens(seq: np.ndarray, n: int) -> list[int]:
    """Tokens that would repeat an n-gram of ``seq`` (transformers ``_get_generated_ngrams``)."""
    if n <= 0 or len(seq) + 1 < n:
        return []
    toks = seq.tolist()
    prefix = tuple(toks[len(toks) - n + 1 :]) if n > 1 else ()
    return [toks[i + n - 1] for i in range(len(toks) - n + 1) if tuple(toks[i : i + n - 1]) == prefix]


def _process(scores: np.ndarray, seqs: np.ndarray, new_len: int, s: GenerationSettings, eos: int) -> np.ndarray:
    """Apply the supported logits processors in place; ``seqs`` = ``(n, cur_len)`` incl. the start token."""
    if s.min_new_tokens and new_len < s.min_new_tokens:
        scores[:, eos] = -np.inf
    if s.no_repeat_ngram_size:
        for r in range(scores.shape[0]):
            banned = _banned_ngram_tokens(seqs[r], s.no_repeat_ngram_size)
            if banned:
                scores[r, banned] = -np.inf
    return scores


@dataclass
class _Hyp:
    ids: list[int]
    logps: list[float]
    score: float


def _greedy(dec: _Decoder, enc: np.ndarray, s: GenerationSettings, start: int, eos: int) -> list[_Hyp]:
    n = enc.shape[0]
    seqs = np.full((n, 1 + s.max_new_tokens), start, dtype=np.int64)
    logps = np.zeros((n, s.max_new_tokens), dtype=np.float32)
    lengths = np.full(n, s.max_new_tokens)
    active = np.arange(n)
    logits, self_kv, cross_kv = dec.first(np.full((n, 1), start, dtype=np.int64), enc)
    step_enc = enc
    for t in range(s.max_new_tokens):
        lp = _log_softmax(logits)
        scores = _process(lp.copy(), seqs[active, : t + 1], t, s, eos)
        tok = scores.argmax(axis=1)
        seqs[active, t + 1] = tok
        logps[active, t] = lp[np.arange(len(active)), tok]
        fin = tok == eos
        lengths[active[fin]] = t + 1
        keep = ~fin
        if t + 1 == s.max_new_tokens or not keep.any():
            break
        if not keep.all():
            active = active[keep]
            self_kv = [a[keep] for a in self_kv]
            cross_kv = [a[keep] for a in cross_kv]
            step_enc = step_enc[keep]
        logits, self_kv = dec.step(tok[keep][:, None], self_kv, cross_kv, step_enc)
    out = []
    for i in range(n):
        k = int(lengths[i])
        lp = logps[i, :k].astype(np.float64)
        out.append(_Hyp(seqs[i, 1 : 1 + k].tolist(), lp.tolist(), float(lp.sum())))
    return out


def _beam(dec: _Decoder, enc: np.ndarray, s: GenerationSettings, start: int, eos: int, pad: int) -> list[_Hyp]:
    """transformers 4.57 ``GenerationMixin._beam_search`` (one EOS id, no sampling) in numpy."""
    n, nb = enc.shape[0], s.num_beams
    L = 1 + s.max_new_tokens  # max_length (decoder prompt = the start token)
    K = 2 * nb  # beams_to_keep = max(2, 1 + n_eos) * num_beams
    es, lpen = s.early_stopping, s.length_penalty
    top_mask = np.arange(K) < nb

    logits, self_kv, cross_kv = dec.first(np.full((n, 1), start, dtype=np.int64), enc)
    logits = np.repeat(logits, nb, axis=0)
    self_kv = [np.repeat(a, nb, axis=0) for a in self_kv]
    cross_kv = [np.repeat(a, nb, axis=0) for a in cross_kv]
    step_enc = np.repeat(enc, nb, axis=0) if dec._step_needs_states else None

    run_seq = np.full((n, nb, L), pad, dtype=np.int64)
    run_seq[:, :, 0] = start
    run_lp = np.zeros((n, nb, L), dtype=np.float32)  # per-token raw log p, aligned with run_seq
    run_scores = np.zeros((n, nb), dtype=np.float32)
    run_scores[:, 1:] = _NEG
    seqs, seq_lp = run_seq.copy(), run_lp.copy()
    seq_len = np.zeros((n, nb), dtype=np.int64)
    beam_scores = np.full((n, nb), _NEG, dtype=np.float32)
    finished = np.zeros((n, nb), dtype=bool)
    unsat = np.ones(n, dtype=bool)

    act = np.arange(n)  # original indices of the items still searched
    cur_len = 1
    while True:
        b = len(act)
        lp_raw = _log_softmax(logits)
        flat_seq = run_seq[act, :, :cur_len].reshape(b * nb, cur_len)
        lp = _process(lp_raw.copy(), flat_seq, cur_len - 1, s, eos)
        V = lp.shape[1]
        acc = (lp.reshape(b, nb, V) + run_scores[act][:, :, None]).reshape(b, nb * V)
        idx = _topk(acc, K)
        topk_lp = _gather(acc, idx)
        beam, tok = idx // V, idx % V
        topk_seq = _gather(run_seq[act], beam)
        topk_seq[:, :, cur_len] = tok
        topk_tlp = _gather(run_lp[act], beam)
        rows = np.arange(b)[:, None] * nb + beam
        topk_tlp[:, :, cur_len] = lp_raw[rows, tok]
        hits = (tok == eos) | (cur_len + 1 >= L)

        # running beams for the next step
        run_cand = topk_lp + hits.astype(np.float32) * _NEG
        nxt = _topk(run_cand, nb)
        run_seq[act] = _gather(topk_seq, nxt)
        run_lp[act] = _gather(topk_tlp, nxt)
        run_scores[act] = _gather(run_cand, nxt)
        src_rows = (np.arange(b)[:, None] * nb + _gather(beam, nxt)).ravel()

        # finished hypotheses
        did = hits & top_mask[None, :]
        fin_cand = topk_lp / np.float32(cur_len ** lpen)
        full = finished[act].all(axis=1, keepdims=True) & (es is True)
        fin_cand = fin_cand + full.astype(np.float32) * _NEG
        fin_cand = fin_cand + (~unsat[act])[:, None].astype(np.float32) * _NEG
        fin_cand = fin_cand + (~did).astype(np.float32) * _NEG
        m_scores = np.concatenate([beam_scores[act], fin_cand], axis=1)
        m_seq = np.concatenate([seqs[act], topk_seq], axis=1)
        m_lp = np.concatenate([seq_lp[act], topk_tlp], axis=1)
        m_len = np.concatenate([seq_len[act], np.full((b, K), cur_len + 1)], axis=1)
        m_fin = np.concatenate([finished[act], did], axis=1)
        best = _topk(m_scores, nb)
        seqs[act], seq_lp[act] = _gather(m_seq, best), _gather(m_lp, best)
        beam_scores[act], seq_len[act] = _gather(m_scores, best), _gather(m_len, best)
        finished[act] = _gather(m_fin, best)

        cur_len += 1
        best_len = (L - 1) if (es == "never" and lpen > 0.0) else (cur_len - 1)
        best_running = run_scores[act, :1] / np.float32(best_len ** lpen)
        worst = np.where(finished[act], beam_scores[act].min(axis=1, keepdims=True), _NEG)
        unsat[act] &= (best_running > worst).any(axis=1)

        frozen = ~unsat[act] | (finished[act].all(axis=1) & (es is True))
        if frozen.all() or hits.all() or cur_len >= L:
            break
        keep = ~frozen
        keep_rows = np.repeat(keep, nb)
        self_kv = [a[src_rows] for a in self_kv]
        if not keep.all():
            self_kv = [a[keep_rows] for a in self_kv]
            cross_kv = [a[keep_rows] for a in cross_kv]  # beams of an item share cross KV
            step_enc = step_enc[keep_rows] if step_enc is not None else None
            act = act[keep]
        last = run_seq[act, :, cur_len - 1].reshape(-1, 1)
        logits, self_kv = dec.step(last, self_kv, cross_kv, step_enc)

    out = []
    for i in range(n):
        k = int(seq_len[i, 0]) - 1
        out.append(_Hyp(seqs[i, 0, 1 : 1 + k].tolist(),
                        seq_lp[i, 0, 1 : 1 + k].astype(np.float64).tolist(), float(beam_scores[i, 0])))
    return out


# ----------------------------------------------------------------------------------------------
# Recogniser
# ----------------------------------------------------------------------------------------------

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
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``services.core.onnx_session``).
        threads: intra-op threads; None reads ``$OCRSTREAM_ORT_THREADS``.
        decoder: ``"auto"`` (merged decoder if exported, else the split pair), ``"merged"``, ``"split"``.
        num_beams, max_new_tokens, length_penalty, early_stopping, min_new_tokens,
            no_repeat_ngram_size: override the model's ``generation_config.json``
            (see :class:`GenerationSettings`); ``max_new_tokens`` is capped so that the
            sequence fits the decoder's position table.
        split_long_lines: split crops with w / h > ``max_ratio`` (docTR's method).
        max_ratio, target_ratio, overlap_ratio: the splitting constants (:mod:`.longlines`).
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
        device: str = "auto",
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
        overrides = {k: v for k, v in dict(
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
        self._decoder = _Decoder(self.model_dir, files, decoder, device, threads,
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
            hyps = _greedy(self._decoder, enc, s, self.start_id, self.eos_id)
        else:
            hyps = _beam(self._decoder, enc, s, self.start_id, self.eos_id, self.pad_id)
        return [self._to_output(h) for h in hyps]

    def _to_output(self, h: _Hyp) -> TrOCROutput:
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

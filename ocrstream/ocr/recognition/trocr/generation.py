"""TrOCR generation: decoding settings, greedy search and beam search over a KV-cache decoder.

Ported from transformers 4.57 ``generation/utils.py`` (``GenerationMixin._sample`` with
``do_sample=False`` and the vectorised ``GenerationMixin._beam_search``): same top-``2 * num_beams``
candidate selection, ``length_penalty`` (score = sum log p / generated_len ** length_penalty,
generated_len counting the EOS token), ``early_stopping`` (True / False / "never") and its
heuristic, ``max_new_tokens``; supported logits processors: ``min_new_tokens`` and
``no_repeat_ngram_size``. Sequences that finished (greedy) or batch items whose result can no
longer change (beam) are dropped from the decoder batch, which changes no output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ocrstream.ocr.recognition.trocr.decoder import KVCacheDecoder

__all__ = ["DEFAULT_MAX_NEW_TOKENS", "GenerationSettings", "Hypothesis", "beam_search", "greedy_search"]

log = logging.getLogger(__name__)

#: used when neither the caller nor generation_config.json sets a length. transformers'
#: own default (max_length=20, i.e. 19 new tokens) truncates ordinary receipt lines.
DEFAULT_MAX_NEW_TOKENS = 64
_NEG = np.float32(-1.0e9)  # transformers' mask value in beam search

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
            early_stopping=cfg["early_stopping"] if cfg.get("early_stopping") is not None else False,
            min_new_tokens=min_new,
            no_repeat_ngram_size=int(cfg.get("no_repeat_ngram_size") or 0),
        )


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


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
    out: np.ndarray = a[np.arange(idx.shape[0])[:, None], idx]
    return out


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
class Hypothesis:
    """One search result: generated ``ids`` (start token excluded, EOS included when emitted),
    raw ``logps`` (log softmax of the unprocessed logits) per id, and the sequence ``score``."""

    ids: list[int]
    logps: list[float]
    score: float


def greedy_search(dec: KVCacheDecoder, enc: np.ndarray, s: GenerationSettings, start: int,
                  eos: int) -> list[Hypothesis]:
    """transformers 4.57 ``GenerationMixin._sample`` (``do_sample=False``) in numpy: one
    :class:`Hypothesis` per row of ``enc`` (``(n, S, D)`` float32 encoder states)."""
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
        out.append(Hypothesis(seqs[i, 1 : 1 + k].tolist(), lp.tolist(), float(lp.sum())))
    return out


def beam_search(dec: KVCacheDecoder, enc: np.ndarray, s: GenerationSettings, start: int, eos: int,
                pad: int) -> list[Hypothesis]:
    """transformers 4.57 ``GenerationMixin._beam_search`` (one EOS id, no sampling) in numpy:
    the best :class:`Hypothesis` per row of ``enc`` (``(n, S, D)`` float32 encoder states)."""
    n, nb = enc.shape[0], s.num_beams
    L = 1 + s.max_new_tokens  # max_length (decoder prompt = the start token)
    K = 2 * nb  # beams_to_keep = max(2, 1 + n_eos) * num_beams
    es, lpen = s.early_stopping, s.length_penalty
    top_mask = np.arange(K) < nb

    logits, self_kv, cross_kv = dec.first(np.full((n, 1), start, dtype=np.int64), enc)
    logits = np.repeat(logits, nb, axis=0)
    self_kv = [np.repeat(a, nb, axis=0) for a in self_kv]
    cross_kv = [np.repeat(a, nb, axis=0) for a in cross_kv]
    step_enc = np.repeat(enc, nb, axis=0) if dec.step_needs_states else None

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
        out.append(Hypothesis(seqs[i, 0, 1 : 1 + k].tolist(),
                        seq_lp[i, 0, 1 : 1 + k].astype(np.float64).tolist(), float(beam_scores[i, 0])))
    return out

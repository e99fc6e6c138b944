"""The TrOCR decoder on ONNX Runtime with a KV cache (optimum's merged file or its split pair).

One call without past for the first token (this is where the cross-attention keys/values are
computed; they are kept for the whole search, because the merged decoder's with-past branch
returns constant placeholders for ``present.*.encoder.*``), then one call per token with past.
ONNX names are optimum's: ``input_ids``, ``encoder_hidden_states``,
``past_key_values.{i}.{decoder|encoder}.{key|value}``, ``use_cache_branch`` -> ``logits``,
``present.{i}.{decoder|encoder}.{key|value}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ocrstream.ocr.runtime.onnx_session import Device, make_session

__all__ = ["KVCacheDecoder"]


class KVCacheDecoder:
    """First step (no past) and next steps (with past) over optimum's decoder file(s)."""

    def __init__(self, model_dir: Path, files: dict[str, str], mode: str, device: Device, threads: int | None,
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
        shape: list[Any] = list(ins[self.self_past[0]].shape)
        self.num_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.self_present = [n.replace("past_key_values.", "present.") for n in self.self_past]
        self.cross_present = [n.replace("past_key_values.", "present.") for n in self.cross_past]
        first_outs = {o.name for o in self.first_sess.get_outputs()}
        missing = [n for n in self.self_present + self.cross_present if n not in first_outs]
        if missing:
            raise ValueError(f"decoder outputs {missing[:3]}... missing: not an optimum TrOCR export")
        states: list[Any] = list(next(i for i in self.first_sess.get_inputs() if i.name == "encoder_hidden_states").shape)
        self.hidden = int(states[2])
        # optimum's merged decoder: the with-past branch does not read encoder_hidden_states
        # (the exporter records this in the manifest); then a (1, 1, D) stub is fed instead
        self.step_needs_states = self.merged and step_reads_states

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
            feeds["encoder_hidden_states"] = enc if self.step_needs_states else stub
        outs = self.step_sess.run(["logits", *self.self_present], feeds)
        return outs[0][:, -1], outs[1:]

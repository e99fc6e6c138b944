"""TrOCR token decoding: ``tokenizer.json`` with the ``tokenizers`` library, as transformers does it.

``decode(skip_special_tokens=True)`` plus transformers' ``clean_up_tokenization`` when
``tokenizer_config.json`` asks for it, i.e. transformers' ``batch_decode(..., skip_special_tokens=True)``;
and which generated token produced each character (for per-character confidences).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["TokenDecoder"]

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
        text: str = self._tok.decode(list(ids), skip_special_tokens=True)
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

"""Text with per-character probabilities, and the normalisation rules ``"nfkc"`` and ``"whitespace"``.

Every rewrite keeps one probability per character, so later rules (the dictionary's protection
of confident characters) still know how sure the recogniser was of each character.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["Reading", "collapse_whitespace", "nfkc"]


@dataclass(frozen=True)
class Reading:
    """Text with one probability per character (kept aligned through every rewrite)."""

    text: str
    probs: tuple[float, ...]


def nfkc(r: Reading) -> Reading:
    """NFKC per character, each output character keeping its source's probability.

    When composition across characters changes the result (a base letter + combining mark),
    the whole string is normalised and every character gets the lowest probability.
    """
    pieces = [unicodedata.normalize("NFKC", ch) for ch in r.text]
    text = "".join(pieces)
    whole = unicodedata.normalize("NFKC", r.text)
    if text != whole:
        return Reading(whole, (min(r.probs, default=0.0),) * len(whole))
    return Reading(text, tuple(p for piece, p in zip(pieces, r.probs) for _ in piece))


def collapse_whitespace(r: Reading) -> Reading:
    """Whitespace runs -> one space (probability of the run's first character), ends stripped."""
    chars: list[str] = []
    probs: list[float] = []
    for ch, p in zip(r.text, r.probs):
        if ch.isspace():
            if not chars or chars[-1] == " ":
                continue
            ch = " "
        chars.append(ch)
        probs.append(p)
    if chars and chars[-1] == " ":
        chars.pop()
        probs.pop()
    return Reading("".join(chars), tuple(probs))



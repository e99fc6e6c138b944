"""Text scoring for tests and benchmarks: CER and WER.

Definitions (as in ``/work/shared/data/sroie-dev/README.md``, section "Metrics"):

* Normalisation: every run of whitespace (newlines included) becomes one space,
  ends are stripped; the ``ci`` (case-insensitive) variants lower-case both sides.
* CER = sum over items of Levenshtein(hypothesis chars, reference chars)
  / sum of reference chars -- micro-averaged over the set, not a mean of per-item CERs.
* WER = the same over whitespace-split words.

Levenshtein distances come from ``rapidfuzz.distance.Levenshtein`` (unit costs for
insertion, deletion, substitution); for WER it runs on lists of words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

__all__ = ["cer", "char_edits", "normalize", "wer", "word_edits"]

_WS = re.compile(r"\s+")


def normalize(s: str, *, case_insensitive: bool) -> str:
    """Collapse every whitespace run to one space, strip the ends, lower-case when ``case_insensitive``."""
    s = _WS.sub(" ", s).strip()
    return s.lower() if case_insensitive else s


def _check_lengths(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if isinstance(hyps, str) or isinstance(refs, str):
        raise TypeError("hyps and refs must be sequences of strings, not a single string")
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")


def char_edits(hyp: str, ref: str, *, ci: bool = True, ignore_spaces: bool = False) -> tuple[int, int]:
    """(Levenshtein edits, reference length) in characters of one normalised pair."""
    h, r = normalize(hyp, case_insensitive=ci), normalize(ref, case_insensitive=ci)
    if ignore_spaces:
        h, r = h.replace(" ", ""), r.replace(" ", "")
    return Levenshtein.distance(h, r), len(r)


def word_edits(hyp: str, ref: str, *, ci: bool = True) -> tuple[int, int]:
    """(Levenshtein edits, reference length) in whitespace-split words of one normalised pair."""
    h = normalize(hyp, case_insensitive=ci).split()
    r = normalize(ref, case_insensitive=ci).split()
    return Levenshtein.distance(h, r), len(r)


def _ratio(pairs: list[tuple[int, int]]) -> float:
    edits = sum(e for e, _ in pairs)
    total = sum(n for _, n in pairs)
    if total == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / total


def cer(
    hyps: Sequence[str], refs: Sequence[str], *, ci: bool = True, ignore_spaces: bool = False
) -> float:
    """Micro-averaged character error rate over the set (0.0 = perfect, may exceed 1.0).

    Args:
        hyps, refs: parallel sequences of hypothesis / reference strings.
        ci: compare case-insensitively (lower-case both sides after normalisation).
        ignore_spaces: drop the (normalised) spaces from both sides first, so that
            word-segmentation differences are not counted.

    Returns ``sum(edits) / sum(len(ref))``; 0.0 when both are empty, ``inf`` when the
    references are all empty but some hypothesis is not.

    Raises:
        ValueError: the sequences differ in length.
        TypeError: a bare string was passed instead of a sequence of strings.
    """
    _check_lengths(hyps, refs)
    return _ratio([char_edits(h, r, ci=ci, ignore_spaces=ignore_spaces) for h, r in zip(hyps, refs)])


def wer(hyps: Sequence[str], refs: Sequence[str], *, ci: bool = True) -> float:
    """Micro-averaged word error rate: as :func:`cer` over whitespace-split words.

    Raises:
        ValueError: the sequences differ in length.
        TypeError: a bare string was passed instead of a sequence of strings.
    """
    _check_lengths(hyps, refs)
    return _ratio([word_edits(h, r, ci=ci) for h, r in zip(hyps, refs)])

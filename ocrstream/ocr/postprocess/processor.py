"""Post-processing of recognised text regions before they are stored: raw and corrected text both.

:class:`PostProcessor` turns one reading (text, mean confidence, per-character probabilities)
into a :class:`Corrected` record. Rules (names in :data:`RULES`, each switchable with
``enabled_rules``):

* ``"nfkc"``: Unicode NFKC normalisation (full-width "：" -> ":", ligatures, super/subscripts).
  No-op on the shipped ``ppocr`` recogniser's default ``charset="latin"``; with ``charset="all"``
  it made 2 of the 748 test-split lines better and none worse.
* ``"whitespace"``: every whitespace run becomes one space, ends stripped (the metric's own
  normalisation, so it does not move CER/WER; it makes stored text canonical).
* ``"confusables"``: in typed fields (:class:`FieldSpec`) only, look-alike characters are read
  as the type allows: O/o/D/Q/C/c -> 0, l/I/i/| -> 1, S/s -> 5, B -> 8, Z/z -> 2, G -> 6 in
  integers, decimals, dates and times (not in month names or AM/PM); a unit misread in one
  letter ("0.28 RH" -> "0.28 RM"); a lost decimal point ("0 24" -> "0.24", two decimals as in
  RM amounts); a misread AM/PM suffix ("05:23PH" -> "05:23PM"); in ``code`` fields with a
  ``regex``, the fewest letter<->digit swaps that make the regex match. A correction is kept
  only if the result validates, else the text stays as read and the field is invalid.
  Test split: 4 of 204 field lines better, none worse.
* ``"dictionary"``: spelling correction of free-text words with symspellpy and its packaged
  English frequency dictionary plus :data:`RECEIPT_WORDS`. Never touches a token with a
  digit, a word already in the lexicon, a word shorter than ``min_word_length`` or a word
  the recogniser was sure of (every character probability >= ``protect_prob``); by default
  (``unsure_edits_only``) every edit must also fall on a character read below ``protect_prob``.
  Test split: 8 of 748 lines better, none worse. Without the character-probability protection
  it made 63 lines worse (shop and place names: "SETIA" -> "SEPIA", "Nando's" -> "And's",
  "PERDANA" -> "SERDANG"); with English words only (no :data:`RECEIPT_WORDS`) 2 ("GST" -> "GET").

Validation of typed fields (type, ``regex``, ``min``/``max``) always runs; ``needs_review`` is
set when the confidence is below ``review_threshold`` or the field did not validate.
:func:`silent_pages` names the pages that hold ink but no text: the store sets the document's
``needs_review`` for them too, so an unread page is never a quiet empty ``done``.


Modules: :mod:`.text` (per-character probabilities, NFKC, whitespace), :mod:`.fields` (typed
fields: look-alikes, validation), :mod:`.lexicon` (the dictionary rule); :class:`PostProcessor`
(here) applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ocrstream.ocr.document import FieldSpec, FieldType
from ocrstream.ocr.postprocess.fields import validate_field
from ocrstream.ocr.postprocess.lexicon import (
    MAX_EDIT_DISTANCE,
    MIN_WORD_LENGTH,
    PROTECT_PROB,
    RECEIPT_WORDS,
    DictionaryConfig,
    correct_words,
    symspell_index,
)
from ocrstream.ocr.postprocess.text import Reading, collapse_whitespace, nfkc

__all__ = [
    "DEFAULT_RULES",
    "RECEIPT_WORDS",
    "RULES",
    "Corrected",
    "FieldSpec",
    "FieldType",
    "PostProcessor",
]

#: every switchable rule (see the module docstring).
RULES = frozenset({"nfkc", "whitespace", "confusables", "dictionary"})
#: rules on by default: all of them (each made lines better and none worse on the test split).
DEFAULT_RULES = RULES
#: confidence (mean character probability) below which a region needs review: the best F1 of
#: flagging lines with CER > 0 on the dev tuning split (0.95: 0.41, 0.98: 0.47, 0.99: 0.43).
REVIEW_THRESHOLD = 0.98


@dataclass(frozen=True)
class Corrected:
    """Result of :meth:`PostProcessor.correct` for one text region.

    Attributes:
        raw_text: the recogniser's text, untouched.
        text: corrected text (== ``raw_text`` when nothing changed).
        value: typed value of a field: ``int`` (integer), ``float`` (decimal), ISO 8601 ``str``
            (date ``"YYYY-MM-DD"``, time ``"HH:MM"`` or ``"HH:MM:SS"``), ``str`` (text, code);
            None for free text or a field that did not validate.
        valid: None for free text, else whether the field validated.
        reason: why the field is invalid, what was corrected and/or why review is needed
            (``"; "``-separated); None when there is nothing to say.
        needs_review: confidence below the review threshold, or failed validation.
    """

    raw_text: str
    text: str
    value: str | int | float | None
    valid: bool | None
    reason: str | None
    needs_review: bool


class PostProcessor:
    """Corrects and validates one recognised text region at a time (rules: module docstring).

    Args:
        lexicon: receipt-domain words added to symspellpy's English frequency dictionary
            (case-insensitive); default :data:`RECEIPT_WORDS`. Used by the "dictionary" rule.
        review_threshold: confidence in [0, 1] below which ``needs_review`` is set.
        protect_prob: character probability in [0, 1] at or above which a character is
            "confident"; a word all of whose characters are confident is never changed.
        max_edit_distance: largest symspell edit distance of a dictionary correction (1..3).
        min_word_length: shorter words are never dictionary-corrected.
        unsure_edits_only: a dictionary correction must only edit unconfident characters.
        enabled_rules: subset of :data:`RULES`; default :data:`DEFAULT_RULES`.

    Raises:
        ValueError: unknown rule names, thresholds outside [0, 1], ``max_edit_distance``
            outside 1..3.
    """

    def __init__(
        self,
        *,
        lexicon: Iterable[str] = RECEIPT_WORDS,
        review_threshold: float = REVIEW_THRESHOLD,
        protect_prob: float = PROTECT_PROB,
        max_edit_distance: int = MAX_EDIT_DISTANCE,
        min_word_length: int = MIN_WORD_LENGTH,
        unsure_edits_only: bool = True,
        enabled_rules: Iterable[str] = DEFAULT_RULES,
    ) -> None:
        rules = frozenset(enabled_rules)
        if unknown := rules - RULES:
            raise ValueError(f"unknown rules {sorted(unknown)}; known: {sorted(RULES)}")
        for name, p in (("review_threshold", review_threshold), ("protect_prob", protect_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not 1 <= max_edit_distance <= 3:
            raise ValueError(f"max_edit_distance must be 1..3, got {max_edit_distance}")
        self.rules = rules
        self.review_threshold = review_threshold
        self._dictionary = DictionaryConfig(
            protect_prob, max_edit_distance, min_word_length, unsure_edits_only,
            frozenset(w.lower() for w in lexicon),
        )

    def preload(self) -> None:
        """Build the dictionary index now (~4 s, once per process) instead of on first use.

        No-op when the "dictionary" rule is off.
        """
        if "dictionary" in self.rules:
            symspell_index(self._dictionary.domain_words, self._dictionary.max_edit_distance)

    def _normalise(self, r: Reading, reasons: list[str]) -> Reading:
        """NFKC and whitespace rules (when enabled); an NFKC change is noted in ``reasons``."""
        if "nfkc" in self.rules:
            normal = nfkc(r)
            if normal.text != r.text:
                reasons.append(f"NFKC: {r.text!r} -> {normal.text!r}")
            r = normal
        if "whitespace" in self.rules:
            r = collapse_whitespace(r)
        return r

    def correct(
        self,
        text: str,
        confidence: float,
        char_probs: Sequence[float] | None = None,
        field: FieldSpec | None = None,
    ) -> Corrected:
        """Post-process one region's reading.

        Args:
            text: recognised text.
            confidence: the recogniser's confidence in [0, 1] (ppocr: mean char probability).
            char_probs: one probability per character of ``text``; None -> every character
                gets ``confidence`` (so a confident line is protected as a whole).
            field: the template field this region fills; None for free text.

        Returns:
            :class:`Corrected` with raw and corrected text, typed value and review flag.

        Raises:
            ValueError: ``char_probs`` does not have one entry per character of ``text``.
        """
        probs = tuple(float(p) for p in char_probs) if char_probs is not None else (float(confidence),) * len(text)
        if len(probs) != len(text):
            raise ValueError(f"text has {len(text)} characters but {len(probs)} char_probs")
        reasons: list[str] = []
        reading = self._normalise(Reading(text, probs), reasons)
        value: str | int | float | None = None
        valid: bool | None = None
        if field is None or field.type == "text":
            reading = self._free_text(reading, reasons)
        if field is not None:
            res = validate_field(reading.text, field, "confusables" in self.rules)
            value, valid, out_text = res.value, res.valid, res.text
            reasons += [res.reason] if res.reason else []
        else:
            out_text = reading.text
        if confidence < self.review_threshold:
            reasons.append(f"confidence {confidence:.3f} < review threshold {self.review_threshold:g}")
        return Corrected(
            raw_text=text,
            text=out_text,
            value=value,
            valid=valid,
            reason="; ".join(reasons) or None,
            needs_review=confidence < self.review_threshold or valid is False,
        )

    def _free_text(self, reading: Reading, reasons: list[str]) -> Reading:
        """Apply the dictionary rule (when enabled), noting its changes in ``reasons``."""
        if "dictionary" not in self.rules:
            return reading
        reading, changes = correct_words(reading, self._dictionary)
        if changes:
            reasons.append("dictionary: " + ", ".join(changes))
        return reading


def silent_pages(pages: Iterable[tuple[int, float | None]], texts: Iterable[tuple[int, str]],
                 ink_threshold: float) -> list[int]:
    """Pages with ink and no text: indexes of ``pages`` (``(page_index, ink)``, ink a fraction in
    [0, 1] from :func:`ocrstream.ocr.cleanup.ink_fraction`, None when not measured) whose ink is
    at least ``ink_threshold`` and on which no region of ``texts`` (``(page_index, text)``) has
    a non-blank text. Sorted; these pages need a person (a drawing, a barcode, letters too big
    or too faint for the detector, text the recogniser could not read).
    """
    read = {page for page, text in texts if text.strip()}
    return sorted(page for page, ink in pages if ink is not None and ink >= ink_threshold and page not in read)

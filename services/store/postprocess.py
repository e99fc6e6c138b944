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

Defaults (:data:`DEFAULT_RULES`, thresholds) are those measured on the SROIE dev lines by
``bench/bench_postprocess.py`` (tuned on the even-numbered receipts, reported on the odd ones).
"""

from __future__ import annotations

import calendar
import functools
import importlib.resources
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time

from rapidfuzz.distance import Levenshtein
from symspellpy import SymSpell, Verbosity

from services.document import FieldSpec, FieldType

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
#: a character read with at least this probability is "confident": its word is never
#: changed by the dictionary (dev tuning split: 0.9 gave 12 lines better, 0 worse; 0.95 and
#: 0.99 broke 1 and 5 lines).
PROTECT_PROB = 0.9
#: symspell edit distance (Damerau-OSA) of dictionary suggestions (dev tuning split: 2 fixed
#: 1 line more than 1, none worse).
MAX_EDIT_DISTANCE = 2
#: shorter words are never dictionary-corrected (dev tuning split: 3 fixed 1 line more than 4).
MIN_WORD_LENGTH = 3
#: symspell prefix length: its documented default (symspellpy ``SymSpell.__init__``).
_PREFIX_LENGTH = 7
#: pseudo-count of a receipt word: the order of a common English word in
#: ``frequency_dictionary_en_82_765.txt`` (e.g. "cashier" 2.8e6), so they rank among them.
_DOMAIN_COUNT = 10_000_000
_ENGLISH = "frequency_dictionary_en_82_765.txt"

#: receipt-domain words absent from the English list (Malaysian receipts: Malay address words,
#: states and towns, company suffixes, receipt abbreviations), written by hand from knowledge of
#: such receipts, not extracted from any ground truth (its author had seen the dev-set errors,
#: though: the bench's "English words only" row shows what the list adds).
RECEIPT_WORDS: tuple[str, ...] = tuple("""
    sdn bhd berhad enterprise trading restoran kedai perniagaan syarikat
    jalan jln lorong lrg taman tmn bandar bukit kampung kampong kg batu lebuh lebuhraya persiaran
    pusat seksyen medan desa kawasan perindustrian perusahaan wisma menara plaza kompleks
    tingkat aras blok simpang sungai sg ulu hilir tanjung tg permai indah utama baru lama
    kuala lumpur selangor johor bahru kedah kelantan melaka malacca negeri sembilan pahang perak
    perlis pulau pinang penang sabah sarawak terengganu putrajaya labuan wilayah persekutuan
    petaling jaya shah alam subang klang kajang cheras ampang puchong rawang seremban ipoh
    kuantan kuching kota kinabalu bangsar damansara setapak sentul kepong selayang gombak
    serdang semenyih bangi cyberjaya sepang nilai skudai senai tampoi muar kluang pahat
    gst sst rm qty amt incl excl inclusive exclusive subtotal rounding adj adjustment cashier
    invoice receipt tel fax hp reg regn co tin mykad ic sn pcs pc pkt ctn btl kgs nett
    payable tendered change cash visa mastercard debit credit eftpos tng ewallet
    disc discount svc chrg tq thankyou terima kasih sila datang lagi jumlah harga tunai baki
    barang dijual tidak boleh dikembalikan cukai perkhidmatan jualan ringgit sen
    """.split())

#: look-alike letters (and "|") of digits: the classic OCR confusions, plus C/c -> 0 and G -> 6
#: seen on dot-matrix receipt prints ("6.0C" for 6.00).
_LOOKALIKES = dict(zip("OoDQCcGlIi|SsBZz", "0000006111155822"))
_DIGIT_TO_LETTER = {"0": "O", "1": "I", "5": "S", "8": "B", "2": "Z"}
_CONFUSE_TO_DIGIT = str.maketrans(_LOOKALIKES)
#: most letter<->digit swaps tried to make a ``code`` field match its regex.
MAX_CODE_SWAPS = 2


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


# -- text with per-character probabilities ------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    """Text with one probability per character (kept aligned through every rewrite)."""

    text: str
    probs: tuple[float, ...]


def _nfkc(r: _Reading) -> _Reading:
    """NFKC per character, each output character keeping its source's probability.

    When composition across characters changes the result (a base letter + combining mark),
    the whole string is normalised and every character gets the lowest probability.
    """
    pieces = [unicodedata.normalize("NFKC", ch) for ch in r.text]
    text = "".join(pieces)
    whole = unicodedata.normalize("NFKC", r.text)
    if text != whole:
        return _Reading(whole, (min(r.probs, default=0.0),) * len(whole))
    return _Reading(text, tuple(p for piece, p in zip(pieces, r.probs) for _ in piece))


def _collapse_whitespace(r: _Reading) -> _Reading:
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
    return _Reading("".join(chars), tuple(probs))


# -- typed fields --------------------------------------------------------------------------


class _Invalid(ValueError):
    """A candidate text is not a valid value of its field (message = reason)."""


@dataclass(frozen=True)
class _Candidate:
    """A possible reading of a field: its text and what was changed to get it (None = nothing)."""

    text: str
    note: str | None = None


_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
#: a number whose decimal point was read as a space/comma or lost: "0 24", "0. 00", "12,00".
_LOST_POINT = re.compile(r"([+-]?\d+)[\s.,]+(\d{2})")
_TIME = re.compile(
    r"(?P<h>\d{1,2})\s*[:.]\s*(?P<m>\d{2})(?:\s*[:.]\s*(?P<s>\d{2}))?"
    r"\s*(?:(?P<ap>[AaPp])\.?\s?[Mm]\.?)?"
)
#: a two-letter time suffix starting with A/P whose second letter is misread ("PH", "pr").
_AMPM_MISREAD = re.compile(r"(?<=\d)(\s?[AaPp])[A-LN-Za-ln-z]$")
_ALNUM = re.compile(r"[A-Za-z0-9|]+")
_DATE_SEPARATORS = re.compile(r"\s*[/.\-\s,]\s*")
#: accepted date layouts after separators become "/"; day first (Malaysian receipts, SROIE),
#: 4-digit year first when present. ``%b``/``%B`` need the C (English) locale.
_DATE_FORMATS = ("%Y/%m/%d", "%d/%m/%Y", "%d/%m/%y", "%d/%b/%Y", "%d/%b/%y", "%d/%B/%Y",
                 "%d/%B/%y", "%b/%d/%Y", "%B/%d/%Y", "%d%b%Y", "%d%b%y")
_MONTH_WORDS = frozenset(
    m.upper() for m in (*calendar.month_abbr[1:], *calendar.month_name[1:], "Sept")
)


def _unit_parts(text: str, unit: str | None) -> tuple[str, str, str]:
    """Split ``text`` into (unit prefix, number part, unit suffix); no unit -> ("", text, "")."""
    if not unit:
        return "", text, ""
    u = re.escape(unit)
    m = re.fullmatch(rf"(?i)({u}\s*)?(.*?)(\s*{u})?", text)
    pre, num, post = m.group(1) or "", m.group(2), m.group(3) or ""
    if pre and post:  # "RM 5 RM": the second one is not a unit position we accept
        num, post = num + post, ""
    return pre, num, post


def _one_off(a: str, b: str) -> bool:
    """Same length, exactly one character differs (case-insensitive)."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a.upper(), b.upper())) == 1


def _repair_unit(text: str, unit: str | None) -> str:
    """A unit of >= 2 characters misread in one character ("0.28 RH" for RM) -> the unit."""
    if not unit or len(unit) < 2 or any(_unit_parts(text, unit)[::2]):
        return text
    n = len(unit)
    if _one_off(text[:n], unit) and not text[n : n + 1].isalpha():
        return unit + text[n:]
    if _one_off(text[-n:], unit) and not text[-n - 1 : -n].isalpha():
        return text[:-n] + unit
    return text


def _in_number(fix: Callable[[str], str], unit: str | None) -> Callable[[str], str]:
    """``fix`` applied to the number part of ``text`` only, the unit left as printed."""
    def apply(text: str) -> str:
        pre, num, post = _unit_parts(text, unit)
        return pre + fix(num) + post

    return apply


def _restore_point(num: str) -> str:
    """"0 24" / "0. 00" / "12,00" -> "0.24" / "0.00" / "12.00" (two decimals, as RM amounts)."""
    m = _LOST_POINT.fullmatch(num)
    return f"{m.group(1)}.{m.group(2)}" if m else num


def _digits_outside_words(text: str) -> str:
    """Look-alikes -> digits in alphanumeric runs that are not month names or AM/PM."""
    def fix(m: re.Match) -> str:
        word = m.group(0)
        if word.upper() in _MONTH_WORDS or word.upper() in ("AM", "PM"):
            return word
        return word.translate(_CONFUSE_TO_DIGIT)

    return _ALNUM.sub(fix, text)


def _repair_ampm(text: str) -> str:
    """A time's two-letter suffix starting with A/P ("PH", "pr") -> AM/PM in the same case."""
    m = _AMPM_MISREAD.search(text)
    if not m:
        return text
    return text[: m.start()] + m.group(1) + ("M" if m.group(1)[-1].isupper() else "m")


_Step = tuple[str, Callable[[str], str]]


def _cumulative(text: str, steps: Sequence[_Step]) -> list[_Candidate]:
    """``text``, then the result of each step applied on top of the previous ones."""
    out, notes = [_Candidate(text)], []
    for note, step in steps:
        fixed = step(out[-1].text)
        if fixed != out[-1].text:
            notes.append(note)
            out.append(_Candidate(fixed, ", ".join(notes)))
    return out


def _field_steps(spec: FieldSpec) -> list[_Step]:
    """Look-alike corrections the field's type allows, in the order they are tried."""
    if spec.type in ("integer", "decimal"):
        steps = [("unit repaired", lambda t: _repair_unit(t, spec.unit)),
                 ("look-alike characters read as digits",
                  _in_number(lambda n: n.translate(_CONFUSE_TO_DIGIT), spec.unit))]
        if spec.type == "decimal":
            steps.append(("decimal point restored", _in_number(_restore_point, spec.unit)))
        return steps
    steps = [("look-alike characters read as digits", _digits_outside_words)]
    return steps + [("AM/PM suffix repaired", _repair_ampm)] if spec.type == "time" else steps


def _swap_options(ch: str) -> str | None:
    """The look-alike of ``ch`` across letters/digits, or None."""
    return _DIGIT_TO_LETTER.get(ch) or _LOOKALIKES.get(ch)


def _code_candidates(text: str, regex: str | None) -> Iterator[_Candidate]:
    """Code as read, without spaces, then with 1..:data:`MAX_CODE_SWAPS` letter<->digit swaps.

    Swaps are only tried when a ``regex`` can tell a right code from a wrong one.
    """
    yield _Candidate(text)
    if not regex:
        return
    packed = re.sub(r"\s+", "", text)
    if packed != text:
        yield _Candidate(packed, "spaces removed")
    positions = [i for i, ch in enumerate(packed) if _swap_options(ch)]
    for n in range(1, MAX_CODE_SWAPS + 1):
        for chosen in itertools.combinations(positions, n):
            chars = list(packed)
            for i in chosen:
                chars[i] = _swap_options(chars[i])
            yield _Candidate("".join(chars), f"{n} look-alike character(s) swapped")


def _check_regex(value_text: str, spec: FieldSpec) -> None:
    if spec.regex is not None and not re.fullmatch(spec.regex, value_text):
        raise _Invalid(f"{value_text!r} does not match {spec.regex!r}")


def _check_range(value: float, spec: FieldSpec) -> None:
    if spec.min is not None and value < spec.min:
        raise _Invalid(f"{value} below min {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise _Invalid(f"{value} above max {spec.max:g}")


def _parse_number(num: str, spec: FieldSpec) -> int | float:
    """Integer/decimal value of ``num`` (thousands commas allowed), range- and regex-checked.

    Raises:
        _Invalid: not a number of the field's type, out of range or regex mismatch.
    """
    pattern = _INTEGER if spec.type == "integer" else _DECIMAL
    if not re.search(r"\d", num) or not pattern.fullmatch(num):
        raise _Invalid(f"{num!r} is not {'an integer' if spec.type == 'integer' else 'a decimal'}")
    plain = num.replace(",", "")
    value: int | float = int(plain) if spec.type == "integer" else float(plain)
    _check_range(value, spec)
    _check_regex(num, spec)
    return value


def _parse_date(text: str) -> str:
    """ISO ``YYYY-MM-DD`` of a receipt date (layouts: :data:`_DATE_FORMATS`).

    Raises:
        _Invalid: no layout matches or the date does not exist (31/02/2018).
    """
    canonical = _DATE_SEPARATORS.sub("/", text.strip())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(canonical, fmt).date().isoformat()
        except ValueError:
            continue
    raise _Invalid(f"{text!r} is not a date")


def _parse_time(text: str) -> str:
    """ISO ``HH:MM`` or ``HH:MM:SS`` (24 h) of a receipt time, 12 h with AM/PM accepted.

    Raises:
        _Invalid: not a time or out of range (25:00, 13:00 PM).
    """
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise _Invalid(f"{text!r} is not a time")
    h, minute, s = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if m["ap"]:
        if not 1 <= h <= 12:
            raise _Invalid(f"{text!r}: hour {h} with AM/PM")
        h = h % 12 + (12 if m["ap"].upper() == "P" else 0)
    try:
        t = time(h, minute, s)
    except ValueError as exc:
        raise _Invalid(f"{text!r} is not a time: {exc}") from None
    return t.isoformat(timespec="seconds" if m["s"] else "minutes")


@dataclass(frozen=True)
class _FieldResult:
    text: str
    value: str | int | float | None
    valid: bool
    reason: str | None


def _first_valid(
    candidates: Iterable[_Candidate], parse: Callable[[str], str | int | float], raw: str
) -> _FieldResult:
    """The first candidate that parses; else invalid with the last candidate's reason."""
    reason, seen = "empty", set()
    for cand in candidates:
        if cand.text in seen:
            continue
        seen.add(cand.text)
        try:
            value = parse(cand.text)
        except _Invalid as exc:
            reason = str(exc)
            continue
        note = f"{cand.note}: {raw!r} -> {cand.text!r}" if cand.note else None
        return _FieldResult(cand.text, value, True, note)
    return _FieldResult(raw, None, False, reason)


def _parser(spec: FieldSpec) -> Callable[[str], str | int | float]:
    """The typed-value parser of ``spec`` (raises :class:`_Invalid`), regex and range included."""
    def parse(text: str) -> str | int | float:
        if spec.type in ("integer", "decimal"):
            return _parse_number(_unit_parts(text, spec.unit)[1], spec)
        _check_regex(text, spec)
        if spec.type == "date":
            return _parse_date(text)
        return _parse_time(text) if spec.type == "time" else text

    return parse


def _validate_field(text: str, spec: FieldSpec, confusables: bool) -> _FieldResult:
    """Correct (when ``confusables``) and validate ``text`` as a value of ``spec``."""
    if not confusables:
        candidates: Iterable[_Candidate] = [_Candidate(text)]
    elif spec.type == "code":
        candidates = _code_candidates(text, spec.regex)
    elif spec.type == "text":
        candidates = [_Candidate(text)]
    else:
        candidates = _cumulative(text, _field_steps(spec))
    return _first_valid(candidates, _parser(spec), text)


# -- dictionary ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _symspell(domain_words: frozenset[str], max_edit_distance: int) -> SymSpell:
    """symspellpy index: the packaged English frequency list + ``domain_words`` (cached, ~4 s).

    Raises:
        FileNotFoundError: the symspellpy wheel lacks :data:`_ENGLISH`.
    """
    sym = SymSpell(max_dictionary_edit_distance=max_edit_distance, prefix_length=_PREFIX_LENGTH)
    path = importlib.resources.files("symspellpy") / _ENGLISH
    with importlib.resources.as_file(path) as file:
        if not sym.load_dictionary(str(file), term_index=0, count_index=1):
            raise FileNotFoundError(file)
    for word in domain_words:
        sym.create_dictionary_entry(word, _DOMAIN_COUNT)
    return sym


def _match_case(word: str, like: str) -> str:
    """``word`` in the casing of ``like`` (UPPER, Title or lower)."""
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word.capitalize()
    return word


_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class _DictionaryConfig:
    protect_prob: float
    max_edit_distance: int
    min_word_length: int
    unsure_edits_only: bool
    domain_words: frozenset[str]


def _edits_unsure(word: str, fix: str, probs: Sequence[float], protect: float) -> bool:
    """Whether every edit from ``word`` to ``fix`` touches a character read below ``protect``.

    An insertion counts as touching the characters on both sides of its position.
    """
    for op in Levenshtein.editops(word.lower(), fix.lower()):
        first = max(op.src_pos - 1, 0) if op.tag == "insert" else op.src_pos
        if not any(p < protect for p in probs[first : op.src_pos + 1]):
            return False
    return True


def _ascii_fold(word: str) -> str:
    """``word`` without diacritics (NFKD, combining marks dropped): "Àway" -> "Away"."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", word) if not unicodedata.combining(ch))


def _lookup(sym: SymSpell, word: str, max_edit_distance: int) -> str | None:
    """Lexicon word for lower-case ``word``: its accent-free form if known, else symspell's
    closest, most frequent suggestion; None when ``word`` is known or nothing is close."""
    if word in sym.words:
        return None
    folded = _ascii_fold(word)
    if folded != word and folded in sym.words:
        return folded
    found = sym.lookup(word, Verbosity.CLOSEST, max_edit_distance=max_edit_distance)
    return found[0].term if found and found[0].term != word else None


def _suggest(word: str, probs: Sequence[float], cfg: _DictionaryConfig) -> str | None:
    """The dictionary's correction of one letters-only ``word``, or None to keep it."""
    if len(word) < cfg.min_word_length or min(probs) >= cfg.protect_prob:
        return None
    fix = _lookup(_symspell(cfg.domain_words, cfg.max_edit_distance), word.lower(), cfg.max_edit_distance)
    if fix is None or (cfg.unsure_edits_only and not _edits_unsure(word, fix, probs, cfg.protect_prob)):
        return None
    return _match_case(fix, word)


def _dictionary(r: _Reading, cfg: _DictionaryConfig) -> tuple[_Reading, list[str]]:
    """Correct the letter runs of digit-free tokens; returns the new reading and what changed.

    A replaced word's characters all get the word's lowest probability.
    """
    text, probs, changes = r.text, list(r.probs), []
    for token in reversed(list(re.finditer(r"\S+", r.text))):
        if any(ch.isdigit() for ch in token.group(0)):
            continue
        for m in reversed(list(_WORD.finditer(token.group(0)))):
            a, b = token.start() + m.start(), token.start() + m.end()
            fix = _suggest(m.group(0), probs[a:b], cfg)
            if fix is None:
                continue
            changes.append(f"{m.group(0)!r} -> {fix!r}")
            low = min(probs[a:b])
            text = text[:a] + fix + text[b:]
            probs[a:b] = [low] * len(fix)
    return _Reading(text, tuple(probs)), changes[::-1]


# -- the post-processor ----------------------------------------------------------------------


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
        self._dictionary = _DictionaryConfig(
            protect_prob, max_edit_distance, min_word_length, unsure_edits_only,
            frozenset(w.lower() for w in lexicon),
        )

    def preload(self) -> None:
        """Build the dictionary index now (~4 s, once per process) instead of on first use.

        No-op when the "dictionary" rule is off.
        """
        if "dictionary" in self.rules:
            _symspell(self._dictionary.domain_words, self._dictionary.max_edit_distance)

    def _normalise(self, r: _Reading, reasons: list[str]) -> _Reading:
        """NFKC and whitespace rules (when enabled); an NFKC change is noted in ``reasons``."""
        if "nfkc" in self.rules:
            normal = _nfkc(r)
            if normal.text != r.text:
                reasons.append(f"NFKC: {r.text!r} -> {normal.text!r}")
            r = normal
        if "whitespace" in self.rules:
            r = _collapse_whitespace(r)
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
        reading = self._normalise(_Reading(text, probs), reasons)
        value: str | int | float | None = None
        valid: bool | None = None
        if field is None or field.type == "text":
            reading = self._free_text(reading, reasons)
        if field is not None:
            res = _validate_field(reading.text, field, "confusables" in self.rules)
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

    def _free_text(self, reading: _Reading, reasons: list[str]) -> _Reading:
        """Apply the dictionary rule (when enabled), noting its changes in ``reasons``."""
        if "dictionary" not in self.rules:
            return reading
        reading, changes = _dictionary(reading, self._dictionary)
        if changes:
            reasons.append("dictionary: " + ", ".join(changes))
        return reading

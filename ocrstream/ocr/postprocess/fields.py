"""Typed template fields: look-alike correction (rule ``"confusables"``) and validation.

Field types (:class:`ocrstream.ocr.document.FieldSpec`): integer, decimal, date, time, code, text.
A correction is kept only if the result validates, else the text stays as read and the field is
invalid (rules and measurements: :mod:`ocrstream.ocr.postprocess.processor`).
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time

from ocrstream.ocr.document import FieldSpec

__all__ = ["MAX_CODE_SWAPS", "FieldResult", "validate_field"]

#: look-alike letters (and "|") of digits: the classic OCR confusions, plus C/c -> 0 and G -> 6
#: seen on dot-matrix receipt prints ("6.0C" for 6.00).
_LOOKALIKES = dict(zip("OoDQCcGlIi|SsBZz", "0000006111155822"))
_DIGIT_TO_LETTER = {"0": "O", "1": "I", "5": "S", "8": "B", "2": "Z"}
_CONFUSE_TO_DIGIT = str.maketrans(_LOOKALIKES)
#: most letter<->digit swaps tried to make a ``code`` field match its regex.
MAX_CODE_SWAPS = 2


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
    assert m is not None  # the middle group takes any one-line text
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
    def fix(m: re.Match[str]) -> str:
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
                chars[i] = _swap_options(chars[i]) or chars[i]  # positions: characters with a look-alike
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
class FieldResult:
    """A field's outcome: the (corrected) ``text``, its typed ``value`` (None when invalid),
    ``valid``, and ``reason`` (what was corrected, or why it is invalid; None when nothing)."""

    text: str
    value: str | int | float | None
    valid: bool
    reason: str | None


def _first_valid(
    candidates: Iterable[_Candidate], parse: Callable[[str], str | int | float], raw: str
) -> FieldResult:
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
        return FieldResult(cand.text, value, True, note)
    return FieldResult(raw, None, False, reason)


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


def validate_field(text: str, spec: FieldSpec, confusables: bool) -> FieldResult:
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



"""Dictionary correction of free text (rule ``"dictionary"``): symspellpy with its packaged English
frequency list plus :data:`RECEIPT_WORDS`, never touching confident characters.

Constants were measured on the SROIE dev lines by ``bench/bench_postprocess.py`` (tuning split:
the even-numbered receipts); the rule's behaviour: :mod:`ocrstream.ocr.postprocess.processor`.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein
from symspellpy import SymSpell, Verbosity

from ocrstream.ocr.postprocess.text import Reading

__all__ = ["MAX_EDIT_DISTANCE", "MIN_WORD_LENGTH", "PROTECT_PROB", "RECEIPT_WORDS", "DictionaryConfig", "WordList",
           "correct_words", "known_words", "symspell_index"]

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


@functools.lru_cache(maxsize=4)
def symspell_index(domain_words: frozenset[str], max_edit_distance: int) -> SymSpell:
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


class WordList:
    """A read-only set of lower-case words kept as one newline-joined string: membership is a
    substring search (~0.1 ms over the English list), and it holds ~0.8 MB where a ``frozenset``
    of the same 83,000 words holds ~20 MiB (the store stage's memory rose by that much the first
    time a receipt asked: issue 24's soak)."""

    def __init__(self, words: Iterable[str]):
        self._blob = "\n" + "\n".join(sorted(set(words))) + "\n"
        self._count = self._blob.count("\n") - 1

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and "\n" not in word and f"\n{word}\n" in self._blob

    def __len__(self) -> int:
        return self._count


@functools.lru_cache(maxsize=1)
def known_words() -> WordList:
    """The words of the packaged English frequency list and :data:`RECEIPT_WORDS`, lower case
    (cached; ~83 000 words, read in well under a second, no symspell index built).

    Raises:
        FileNotFoundError: the symspellpy wheel lacks :data:`_ENGLISH`.
    """
    path = importlib.resources.files("symspellpy") / _ENGLISH
    words = [line.split(" ", 1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line]
    return WordList([*words, *RECEIPT_WORDS])


def _match_case(word: str, like: str) -> str:
    """``word`` in the casing of ``like`` (UPPER, Title or lower)."""
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word.capitalize()
    return word


_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class DictionaryConfig:
    """Settings of the dictionary rule (see :class:`ocrstream.ocr.postprocess.processor.PostProcessor`)."""

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


def _suggest(word: str, probs: Sequence[float], cfg: DictionaryConfig) -> str | None:
    """The dictionary's correction of one letters-only ``word``, or None to keep it."""
    if len(word) < cfg.min_word_length or min(probs) >= cfg.protect_prob:
        return None
    fix = _lookup(symspell_index(cfg.domain_words, cfg.max_edit_distance), word.lower(), cfg.max_edit_distance)
    if fix is None or (cfg.unsure_edits_only and not _edits_unsure(word, fix, probs, cfg.protect_prob)):
        return None
    return _match_case(fix, word)


def correct_words(r: Reading, cfg: DictionaryConfig) -> tuple[Reading, list[str]]:
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
    return Reading(text, tuple(probs)), changes[::-1]


"""ocrstream/ocr/postprocess/: field validation/correction, dictionary protection, NFKC, review."""

from __future__ import annotations

import pytest

from ocrstream.ocr.postprocess.processor import RULES, FieldSpec, PostProcessor

DECIMAL_RM = FieldSpec("total", "decimal", unit="RM")
INTEGER = FieldSpec("qty", "integer")
DATE = FieldSpec("date", "date")
TIME = FieldSpec("time", "time")


@pytest.fixture(scope="module")
def pp() -> PostProcessor:
    return PostProcessor()


def probs_low_at(text: str, *positions: int, low: float = 0.3, high: float = 0.99) -> list[float]:
    """Char probs: ``low`` at ``positions``, ``high`` elsewhere."""
    return [low if i in positions else high for i in range(len(text))]


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text", "value"),
    [
        ("RM 12.5O", "RM 12.50", 12.5),
        ("12.5O RM", "12.50 RM", 12.5),
        ("RM12.50", "RM12.50", 12.5),
        ("0 24", "0.24", 0.24),  # decimal point read as a space
        ("0. 00", "0.00", 0.0),
        ("6.0C", "6.00", 6.0),
        ("0.28 RH", "0.28 RM", 0.28),  # unit misread in one letter
        ("1,234.5O", "1,234.50", 1234.5),
    ],
)
def test_decimal_with_unit_corrected(pp, raw, text, value):
    out = pp.correct(raw, 0.99, field=DECIMAL_RM)
    assert (out.text, out.value, out.valid) == (text, pytest.approx(value), True)
    assert out.raw_text == raw
    assert out.needs_review is False
    assert (out.reason is None) == (raw == text)  # a correction says what it did


def test_valid_decimal_untouched(pp):
    out = pp.correct("RM 7.10", 0.99, field=DECIMAL_RM)
    assert (out.text, out.value, out.valid, out.reason) == ("RM 7.10", 7.1, True, None)


def test_lookalikes_fixed_in_integer_field_only(pp):
    as_int = pp.correct("l23", 0.99, field=INTEGER)
    assert (as_int.text, as_int.value, as_int.valid) == ("123", 123, True)
    free = pp.correct("l23", 0.99)
    assert (free.text, free.value, free.valid) == ("l23", None, None)
    as_text = pp.correct("l23", 0.99, field=FieldSpec("name", "text"))
    assert (as_text.text, as_text.value, as_text.valid) == ("l23", "l23", True)


def test_confusables_rule_can_be_switched_off():
    out = PostProcessor(enabled_rules=RULES - {"confusables"}).correct("l23", 0.99, field=INTEGER)
    assert (out.text, out.value, out.valid) == ("l23", None, False)
    assert "not an integer" in out.reason


def test_out_of_range_is_invalid_with_reason(pp):
    high = pp.correct("l50", 0.99, field=FieldSpec("pct", "integer", max=100))
    assert (high.valid, high.value, high.text) == (False, None, "l50")  # failed fixes are not kept
    assert "above max 100" in high.reason
    assert high.needs_review
    low = pp.correct("-3.00", 0.99, field=FieldSpec("amount", "decimal", min=0))
    assert low.valid is False and "below min 0" in low.reason
    inside = pp.correct("13.5", 0.99, field=FieldSpec("hb", "decimal", unit="g/dL", min=5, max=20))
    assert (inside.valid, inside.value) == (True, 13.5)


def test_unit_other_than_the_fields_is_invalid(pp):
    out = pp.correct("$7.10", 0.99, field=DECIMAL_RM)
    assert out.valid is False and "not a decimal" in out.reason


def test_regex_failure_is_invalid(pp):
    out = pp.correct("123", 0.99, field=FieldSpec("pin", "integer", regex=r"\d{4}"))
    assert out.valid is False and "does not match" in out.reason
    ok = pp.correct("1234", 0.99, field=FieldSpec("pin", "integer", regex=r"\d{4}"))
    assert (ok.valid, ok.value) == (True, 1234)


# -- codes ----------------------------------------------------------------------------------


def test_code_fixed_towards_its_regex(pp):
    spec = FieldSpec("invoice", "code", regex=r"[A-Z]{2}\d{8}")
    out = pp.correct("C500013251", 0.99, field=spec)
    assert (out.text, out.value, out.valid) == ("CS00013251", "CS00013251", True)


def test_code_spaces_removed_for_regex(pp):
    out = pp.correct("00038 1399040", 0.99, field=FieldSpec("gst_id", "code", regex=r"\d{12}"))
    assert (out.text, out.valid) == ("000381399040", True)


def test_code_without_regex_is_kept_as_read(pp):
    out = pp.correct("C500013251", 0.99, field=FieldSpec("invoice", "code"))
    assert (out.text, out.valid) == ("C500013251", True)


def test_code_beyond_repair_is_invalid(pp):
    out = pp.correct("HELLO", 0.99, field=FieldSpec("invoice", "code", regex=r"[A-Z]{2}\d{8}"))
    assert (out.text, out.valid) == ("HELLO", False)
    assert "does not match" in out.reason


# -- dates and times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["21/11/2026", "2026-11-21", "21-11-26", "21 NOV 2026", "21 Nov 2026", "21.11.2026",
            "21-NOV-26", "2026/11/21", "2l/11/2O26", "2l NOV 2O26"],
)
def test_dates_in_receipt_formats(pp, raw):
    out = pp.correct(raw, 0.99, field=DATE)
    assert (out.value, out.valid) == ("2026-11-21", True)


def test_date_text_keeps_its_printed_layout(pp):
    assert pp.correct("2l/11/2O26", 0.99, field=DATE).text == "21/11/2026"
    assert pp.correct("21 NOV 2026", 0.99, field=DATE).text == "21 NOV 2026"


@pytest.mark.parametrize("raw", ["31/02/2018", "TOTAL", "21/13/2026", ""])
def test_impossible_dates_invalid(pp, raw):
    out = pp.correct(raw, 0.99, field=DATE)
    assert (out.valid, out.value, out.needs_review) == (False, None, True)
    assert "not a date" in out.reason


@pytest.mark.parametrize(
    ("raw", "text", "value"),
    [
        ("11:58:00", "11:58:00", "11:58:00"),
        ("05:23PH", "05:23PM", "17:23"),  # misread PM
        ("12:13:17 pr", "12:13:17 pm", "12:13:17"),
        ("12:05 AM", "12:05 AM", "00:05"),
        ("O8:2SPM", "08:25PM", "20:25"),
        ("14.30", "14.30", "14:30"),
    ],
)
def test_times(pp, raw, text, value):
    out = pp.correct(raw, 0.99, field=TIME)
    assert (out.text, out.value, out.valid) == (text, value, True)


@pytest.mark.parametrize("raw", ["25:00", "13:00 PM", "10:61"])
def test_impossible_times_invalid(pp, raw):
    out = pp.correct(raw, 0.99, field=TIME)
    assert out.valid is False and out.value is None


# -- dictionary -----------------------------------------------------------------------------


def test_unconfident_misspelling_corrected_confident_one_kept(pp):
    text = "Total Payakle"
    unsure = pp.correct(text, 0.95, probs_low_at(text, 10))  # the "k" was unsure
    assert unsure.text == "Total Payable"
    assert "Payakle" in unsure.reason
    sure = pp.correct(text, 0.99, [0.99] * len(text))
    assert sure.text == text
    # a confident word is protected as a whole, even where edits may touch confident chars
    assert PostProcessor(unsure_edits_only=False).correct(text, 0.99, [0.99] * len(text)).text == text


def test_edit_must_fall_on_an_unsure_character(pp):
    text = "Total Payakle"
    assert pp.correct(text, 0.95, probs_low_at(text, 7)).text == text  # unsure "a", wrong "k"
    anywhere = PostProcessor(unsure_edits_only=False)
    assert anywhere.correct(text, 0.95, probs_low_at(text, 7)).text == "Total Payable"


def test_protect_prob_is_configurable(pp):
    text = "Payakle"
    probs = probs_low_at(text, 4, low=0.93)
    assert pp.correct(text, 0.99, probs).text == text  # 0.93 >= default protect_prob
    assert PostProcessor(protect_prob=0.95).correct(text, 0.99, probs).text == "Payable"


def test_case_follows_the_token(pp):
    assert pp.correct("PAYAKLE", 0.9, probs_low_at("PAYAKLE", 4)).text == "PAYABLE"


def test_stray_accent_dropped_when_the_plain_word_is_known(pp):
    text = "Take Àway"  # PP-OCR's Latin charset reads a smudged "A" as "À"
    assert pp.correct(text, 0.95, probs_low_at(text, 5)).text == "Take Away"


def test_tokens_with_digits_never_touched(pp):
    text = "Payak1e"
    assert pp.correct(text, 0.5, [0.3] * len(text)).text == text


def test_receipt_words_are_in_the_lexicon(pp):
    text = "Jln Bukit"
    probs = probs_low_at(text, 1)
    assert pp.correct(text, 0.9, probs).text == text
    # without the receipt-domain words, English alone "corrects" the Malay abbreviation
    assert PostProcessor(lexicon=()).correct(text, 0.9, probs).text != text


def test_dictionary_rule_can_be_switched_off():
    text = "Total Payakle"
    off = PostProcessor(enabled_rules=RULES - {"dictionary"})
    assert off.correct(text, 0.95, probs_low_at(text, 10)).text == text


def test_missing_char_probs_use_the_confidence(pp):
    assert pp.correct("Total Payakle", 0.99).text == "Total Payakle"
    assert pp.correct("Total Payakle", 0.5).text == "Total Payable"


# -- normalisation --------------------------------------------------------------------------


def test_nfkc_full_width_punctuation(pp):
    out = pp.correct("Total：12", 0.99)
    assert out.text == "Total:12"
    assert "NFKC" in out.reason
    assert PostProcessor(enabled_rules=()).correct("Total：12", 0.99).text == "Total：12"


def test_nfkc_full_width_digits_in_decimal_field(pp):
    out = pp.correct("１２.５０", 0.99, field=DECIMAL_RM)
    assert (out.text, out.value) == ("12.50", 12.5)


def test_char_probs_follow_nfkc(pp):
    text = "ＰＡＹＡＫＬＥ"  # full-width letters, the "Ｋ" unsure
    assert pp.correct(text, 0.9, probs_low_at(text, 4)).text == "PAYABLE"


def test_whitespace_collapsed(pp):
    assert pp.correct("  TOTAL \t RM\n", 0.99).text == "TOTAL RM"


# -- review ---------------------------------------------------------------------------------


def test_needs_review(pp):
    assert pp.correct("TOTAL", 0.5).needs_review is True
    assert "confidence" in pp.correct("TOTAL", 0.5).reason
    assert pp.correct("TOTAL", 0.999).needs_review is False
    assert pp.correct("RM 7.10", 0.999, field=DECIMAL_RM).needs_review is False
    assert pp.correct("RM 7.1X", 0.999, field=DECIMAL_RM).needs_review is True
    assert PostProcessor(review_threshold=0.4).correct("TOTAL", 0.5).needs_review is False


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"type": "money"}, {"regex": "("}, {"type": "decimal", "min": 5, "max": 1}, {"type": "date", "unit": "RM"}],
)
def test_bad_field_spec(kwargs):
    with pytest.raises(ValueError):
        FieldSpec("f", **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"enabled_rules": {"spellcheck"}}, {"review_threshold": 1.5}, {"max_edit_distance": 0}]
)
def test_bad_postprocessor_options(kwargs):
    with pytest.raises(ValueError):
        PostProcessor(**kwargs)


def test_char_probs_length_checked(pp):
    with pytest.raises(ValueError, match="char_probs"):
        pp.correct("TOTAL", 0.9, [0.9, 0.9])


def test_known_words_are_the_english_list_and_the_receipt_words_lower_case():
    from ocrstream.ocr.postprocess.lexicon import RECEIPT_WORDS, known_words
    words = known_words()
    assert all(w in words for w in ("market", "mini", "stationery", *RECEIPT_WORDS))
    assert "descr" not in words and "MARKET" not in words and len(words) > 80_000
    assert "market\nmini" not in words and "" not in words and "marke" not in words  # whole words only


def test_the_word_list_is_small_in_memory():
    """83,000 words as one string, not ~20 MiB of str objects in a set (issue 24's soak: the store
    stage grew by that much the first time a receipt asked)."""
    import tracemalloc

    from ocrstream.ocr.postprocess.lexicon import WordList, known_words
    words = [f"word{i:06d}" for i in range(83_000)]
    tracemalloc.start()
    kept = WordList(words)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "word041999" in kept and len(kept) == 83_000
    assert held < 3 * 2**20, f"{held / 2**20:.1f} MiB"
    assert len(known_words()) > 80_000

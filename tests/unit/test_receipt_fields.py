"""Receipt fields without a template (ocrstream/ocr/receipt_fields.py): the rules on Documents built
from lines of text (no OCR; rendered and real receipts through the OCR are in
tests/test_receipt_fields.py), every bound crossed, and the fields in the Document and its export."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from ocrstream.contracts import events
from ocrstream.contracts.event_models import FieldResult
from ocrstream.ocr import receipt_fields as rf
from ocrstream.ocr.document import Document
from ocrstream.ocr.receipt_fields import document_fields, extract_fields, parse_amount, parse_date

PITCH = 30.0


def doc(*pages: list[str | tuple[str, ...]], confidence: float = 0.99,
        confidences: dict[str, float] | None = None) -> Document:
    """A done Document: each page a list of visual lines; a line is a text (one region) or a tuple
    of texts (regions side by side, left to right); ``confidences``: by region text, else ``confidence``."""
    regions, sizes = [], []
    for p, lines in enumerate(pages):
        sizes.append({"page_index": p, "width": 1000, "height": max(100, int(PITCH * (len(lines) + 2)))})
        order = 0
        for i, line in enumerate(lines):
            parts = (line,) if isinstance(line, str) else line
            x = 10.0
            for text in parts:
                width = 12.0 * max(len(text), 1)
                regions.append({"region_id": f"p{p}-r{order}", "page_index": p, "line_index": i, "order": order,
                                "box": [x, PITCH * i + 5, x + width, PITCH * i + 25], "text": text,
                                "confidence": (confidences or {}).get(text, confidence)})
                x += width + 40
                order += 1
    return Document.from_results({"document_id": "d", "status": "done", "pages": sizes, "regions": regions})


RECEIPT = [
    "CORNER GROCER SDN BHD",
    "(123456-X)",
    "NO 12 JALAN MERANTI",
    "47301 PETALING JAYA, SELANGOR",
    "TEL: 03-7781 2200",
    "TAX INVOICE",
    "INVOICE NO: CS 104522",
    ("DATE: 21/11/2026", "14:03"),
    "ITEM QTY PRICE AMOUNT",
    "MILK 1L",
    ("2 X 6.90", "13.80"),
    ("WHOLEMEAL BREAD 1 X 4.50", "4.50"),
    ("SUBTOTAL", "18.30"),
    ("GST 6%", "1.10"),
    ("ROUNDING", "0.00"),
    ("TOTAL", "RM 19.40"),
    ("CASH", "50.00"),
    ("CHANGE", "30.60"),
    "GST SUMMARY AMOUNT TAX",
    ("SR @ 6%", "18.30", "1.10"),
    "THANK YOU PLEASE COME AGAIN",
]


def values(fields):
    return {k: (v.text, v.value) for k, v in fields.items() if k != "line_items"}


def test_a_receipt_with_tax_lines_gives_every_field_with_its_regions():
    d = doc(RECEIPT)
    f = extract_fields(d)
    assert f["vendor_name"].text == "CORNER GROCER SDN BHD"
    assert f["vendor_address"].text == "NO 12 JALAN MERANTI 47301 PETALING JAYA, SELANGOR"
    assert (f["date"].text, f["date"].value) == ("21/11/2026", "2026-11-21")
    # the amount as printed; a currency printed apart is a word of its own (an attached one stays: "RM7.00")
    assert (f["total"].text, f["total"].value, f["total"].currency) == ("19.40", Decimal("19.40"), "MYR")
    assert f["total"].value == f["subtotal"].value + f["tax"].value  # the rule that picked it
    assert (f["subtotal"].value, f["tax"].value, f["currency"].value) == (Decimal("18.30"), Decimal("1.10"), "MYR")
    items = f["line_items"].value
    assert [(i["description"], i["quantity"], i["unit_price"], i["amount"]) for i in items] == [
        ("MILK 1L", Decimal("2"), Decimal("6.90"), Decimal("13.80")),
        ("WHOLEMEAL BREAD", Decimal("1"), Decimal("4.50"), Decimal("4.50"))]
    regions = {r.region_id: r for p in d.pages for line in p.lines for r in line.regions}
    assert [regions[i].text for i in f["total"].region_ids] == ["RM 19.40"]  # the value's region, not the label's
    assert f["total"].boxes == (regions[f["total"].region_ids[0]].box,)
    assert all(0 < v.confidence <= 1 and v.page_index == 0 for v in f.values())


def test_an_attached_currency_is_part_of_the_printed_total_and_a_rounded_total_wins():
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("Total RM Incl. of GST", "RM31.47"),
                            ("Rounding Adj", "-0.02"), ("Total RM", "RM31.45"), ("CASH", "RM50.00")]))
    assert (f["total"].text, f["total"].value, f["currency"].value) == ("RM31.45", Decimal("31.45"), "MYR")


def test_without_a_total_label_cash_minus_change_finds_the_total():
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("SUBTOTAL:", "44.90"), ("TL:RM", "44.90"),
                            ("CASH", "100.00"), ("CHANGE", "55.10")]))
    assert f["total"].value == Decimal("44.90") and f["total"].confidence < 0.5
    assert f["total"].region_ids == ("p0-r5",)  # the unlabelled amount, not the subtotal's


def test_the_largest_labelled_total_agreeing_with_cash_minus_change_wins():
    lines = ["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("TOTAL QTY: 3", "3.00"), ("TOTAL", "12.00"),
             ("TOTAL INCL. GST", "12.72"), ("CASH", "20.00"), ("CHANGE", "7.28"),
             "GST SUMMARY", ("TOTAL :", "12.00", "0.72")]
    f = extract_fields(doc(lines))
    assert f["total"].value == Decimal("12.72")
    no_agreement = extract_fields(doc(lines[:5]))
    assert no_agreement["total"].value == Decimal("12.72")  # the stronger label (INCL.) still wins


def test_several_dates_a_labelled_one_wins_else_the_first():
    lines = ["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "PRINTED 02/01/2019 10:00", "EXPIRY DATE: 31/12/2019",
             "DATE : 01-03-18 5:23 PM", ("TOTAL", "5.00")]
    assert extract_fields(doc(lines))["date"].value == "2018-03-01"
    unlabelled = [line for line in lines if "DATE" not in line]
    assert extract_fields(doc(unlabelled))["date"].value == "2019-01-02"


def test_a_receipt_without_a_total_has_no_total_and_invents_nothing():
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT", "ITEM QTY",
                            ("PENCIL", "1.20"), ("CASH", "5.00")]))
    assert "total" not in f and "subtotal" not in f and "tax" not in f
    assert f["vendor_name"].text == "ACME TRADING"


@pytest.mark.parametrize("lines", [
    [],
    ["", "   "],
    ["Meeting moved to Friday", "Room 4B at 10:30", "Kind regards, the team 2024"],  # not a receipt
    ["Dear customer,", "your parcel 4471-2209 left our depot on 03/04/2024", "Questions? Call 03-7781 2200."],
    ["BÄCKEREI MÜLLER GMBH", "HAUPTSTRASSE 5, 10115 BERLIN", "BROT 2,50", "SUMME EUR 2,50", "BAR 5,00",
     "RÜCKGELD 2,50"],  # German: decimal commas, no label known
    ["東京スーパー", "合計 ¥1,200", "ありがとうございました"],  # Japanese
    ["ГАСТРОНОМ", "ИТОГО 120.00", "СПАСИБО"],  # Russian: an amount but no label or receipt word
])
def test_pages_that_are_not_receipts_or_in_another_language_give_no_fields(lines):
    assert extract_fields(doc(lines)) == {}


def test_junk_text_never_raises():
    junk = ["%%%%", "1.00.00.00", "31/02/2018", "TOTAL", "TOTAL TOTAL", ":::: 9" * 80, "RM", "$", "-",
            "99/99/9999 TOTAL 1.1", "DATE", "\x00\ufffd", "TOTAL -0.00", "TOTAL 99999999.99"]
    for i in range(len(junk)):
        extract_fields(doc(junk[i:] + junk[:i]))


def test_parse_date_layouts_and_impossible_dates():
    assert parse_date("DATE : 22/12/2017 14:03") == (date(2017, 12, 22), (7, 17))
    cases = {"01-03-18": date(2018, 3, 1), "2018-03-01": date(2018, 3, 1), "14 MAR 2018": date(2018, 3, 14),
             "05-AUG-2017": date(2017, 8, 5), "OCT 3, 2016": date(2016, 10, 3), "24 Mar 18": date(2018, 3, 24),
             "(06/12/2016)": date(2016, 12, 6), "12/25/2018": date(2018, 12, 25), "2016/05/01": date(2016, 5, 1)}
    for text, want in cases.items():
        assert parse_date(text)[0] == want, text
    for text in ("31/02/2018", "13/13/2018 x", "1.00", "INV 2018-99-99", "01/01/1850", "20931", "3.30/1"):
        assert parse_date(text) is None, text


def test_parse_amount_needs_two_decimals_and_keeps_the_printed_currency():
    assert parse_amount("TOTAL RM15.90") == (Decimal("15.90"), "RM", (6, 13))
    assert parse_amount("1,234.50")[0] == Decimal("1234.50")
    assert parse_amount("$8.20")[1] == "$"
    for text in ("12,50", "15", "1.5", "03-7781 2200", "22/12/2017", "v1.2.30"):
        assert parse_amount(text) is None, text


# ----------------------------------------------------------------------------- bounds, each crossed

def receipt_with_total_at_line(n_filler: int) -> Document:
    return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT", *["." * 3] * n_filler,
                ("TOTAL", "7.70")])


def test_lines_beyond_max_lines_are_not_read():
    assert extract_fields(receipt_with_total_at_line(rf.MAX_LINES - 4))["total"].value == Decimal("7.70")
    assert "total" not in extract_fields(receipt_with_total_at_line(rf.MAX_LINES - 3))


def test_characters_beyond_max_line_chars_are_not_read():
    def with_pad(n: int) -> Document:
        return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT", "TOTAL" + " " * n + "7.70"])

    inside = rf.MAX_LINE_CHARS - len("TOTAL7.70")
    assert extract_fields(with_pad(inside))["total"].value == Decimal("7.70")
    assert "total" not in extract_fields(with_pad(inside + 1))


def test_amount_candidates_beyond_max_candidates_are_not_read():
    def with_amounts(n: int) -> Document:
        return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT",
                    *[("ITEM", "1.00")] * n, ("TOTAL", "7.70")])

    assert extract_fields(with_amounts(rf.MAX_CANDIDATES - 1))["total"].value == Decimal("7.70")
    assert "total" not in extract_fields(with_amounts(rf.MAX_CANDIDATES))


def test_date_candidates_beyond_max_candidates_are_not_read():
    def with_dates(n: int) -> Document:
        return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", *["PRINTED 01/01/2019"] * n,
                    "DATE 05/05/2020", ("TOTAL", "7.70")])

    assert extract_fields(with_dates(rf.MAX_CANDIDATES - 1))["date"].value == "2020-05-05"
    assert extract_fields(with_dates(rf.MAX_CANDIDATES))["date"].value == "2019-01-01"


def test_line_items_beyond_max_items_are_not_kept():
    def with_items(n: int) -> Document:
        return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "ITEM QTY AMOUNT",
                    *[(f"WIDGET {i}", "1.00") for i in range(n)], ("TOTAL", f"{n}.00")])

    assert len(extract_fields(with_items(rf.MAX_ITEMS))["line_items"].value) == rf.MAX_ITEMS
    assert len(extract_fields(with_items(rf.MAX_ITEMS + 1))["line_items"].value) == rf.MAX_ITEMS


def test_address_lines_beyond_max_address_lines_are_not_kept():
    def with_lines(n: int) -> Document:
        return doc(["ACME TRADING", *[f"LOT {i} JALAN" for i in range(n)], "TEL 03-1234 5678", ("TOTAL", "1.00")])

    assert extract_fields(with_lines(rf.MAX_ADDRESS_LINES))["vendor_address"].text.count("JALAN") == rf.MAX_ADDRESS_LINES
    assert extract_fields(with_lines(rf.MAX_ADDRESS_LINES + 1))["vendor_address"].text.count("JALAN") \
        == rf.MAX_ADDRESS_LINES


def test_pages_beyond_max_pages_are_not_read():
    blank = ["Meeting moved to Friday"]
    receipt = ["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT", ("TOTAL", "7.70")]
    assert extract_fields(doc(*[blank] * (rf.MAX_PAGES - 1), receipt))["total"].page_index == rf.MAX_PAGES - 1
    assert extract_fields(doc(*[blank] * rf.MAX_PAGES, receipt)) == {}


def test_the_vendor_is_searched_in_the_first_lines_only():
    def with_top(n: int) -> Document:
        return doc([*["TAX INVOICE"] * n, "ACME TRADING", "CASH RECEIPT", ("TOTAL", "7.70")])

    assert extract_fields(with_top(rf.VENDOR_SEARCH_LINES - 1))["vendor_name"].text == "ACME TRADING"
    assert "vendor_name" not in extract_fields(with_top(rf.VENDOR_SEARCH_LINES))


# ----------------------------------------------------------------------------- where the fields go

def test_fields_json_fits_the_results_event_and_the_document_export():
    d = doc(RECEIPT)
    fields = document_fields(d)
    assert fields["total"]["value"] == 19.4 and fields["total"]["text"] == "19.40"
    assert fields["total"]["source"] == "receipt" and fields["total"]["currency"] == "MYR"
    typed = events.convert(dict[str, FieldResult], fields, events.RESULTS)  # the event model accepts them
    assert typed["date"].value == "2026-11-21" and typed["total"].regions
    assert document_fields(d, receipts=False) == {}
    template = [{"field": {"name": "total", "type": "decimal"}, "text": "1.00", "value": 1.0, "valid": True}]
    assert document_fields(d, template) == {"total": {"value": 1.0, "text": "1.00", "valid": True}}
    event = {"document_id": "d", "status": "done", "pages": [{"page_index": 0, "width": 10, "height": 10}],
             "regions": [], "fields": fields}
    assert Document.from_results(event).export()["fields"] == fields


# ----------------------------------------------------------------------------- rules added for issue 26's second pass

@pytest.mark.parametrize("label", ["Tota l", "lotal Sales Incl. GST", "Net Amt :", "Amount To Be Paid :",
                                   "Total After Rounding", "Amount Incl, GST", "AMT PAID incL GST :"])
def test_total_labels_as_ocr_reads_them(label):
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("ITEM", "3.00"), (label, "12.35"),
                            ("CASH", "20.00"), ("CHANGE", "7.65")]))
    assert f["total"].value == Decimal("12.35")


def test_a_tax_statement_and_the_cash_accepted_are_not_totals():
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("Takeout Total (incl GST)", "70.30"),
                            ("Accepted total", "80.30"), ("Change", "10.00"), ("TOTAL INCLUDES 6% GST", "3.98")]))
    assert f["total"].value == Decimal("70.30")


def test_the_amount_paid_confirmed_by_subtotal_beats_an_unconfirmed_total():
    lines = ["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("ITEM", "85.20"), ("SubTotal", "85.20"),
             ("Net Total", "35.20"), ("Cash", "100.20"), ("CHANGE", "15.00")]
    f = extract_fields(doc(lines))
    assert f["total"].value == Decimal("85.20") and f["total"].confidence < 0.6
    # unconfirmed (no subtotal equal to cash - change): the labelled total stands
    assert extract_fields(doc(lines[:3] + lines[4:]))["total"].value == Decimal("35.20")


def test_without_a_total_label_the_cash_is_the_total_only_when_confirmed_or_labelled_paid():
    confirmed = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT",
                                    ("SUB-TOTAL/(EX)", "144.68"), ("TAX", "8.68"), ("ROUNDING", "-0.01"),
                                    ("CASH", "153.35"), ("CHANGE", "0.00")]))
    assert confirmed["total"].value == Decimal("153.35") and confirmed["total"].confidence < 0.5
    paid = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "TAX INVOICE", ("ITEM A", "100.00"),
                               ("ITEM B", "11.90"), "PAID BY CARD : RMI11.90"]))
    assert (paid["total"].text, paid["total"].value) == ("RM111.90", Decimal("111.90"))  # a digit misread as I


def test_an_amount_split_at_its_decimal_point_and_a_value_printed_beside_its_label():
    f = extract_fields(doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", ("Subtotal", "87.90"), ("Total:", "102.39"),
                            ("", "0.01"), "Total 102. 40"]))
    assert (f["total"].text, f["total"].value) == ("102.40", Decimal("102.40"))
    # "Total" and its value read as two visual lines, the value half a line lower
    regions = [{"region_id": r, "page_index": 0, "line_index": i, "order": i, "box": box, "text": t, "confidence": 0.99}
               for i, (r, t, box) in enumerate([
                   ("a", "ACME TRADING", [10, 0, 200, 30]), ("b", "NO 1 JALAN SATU 50000 KL", [10, 40, 300, 70]),
                   ("c", "CASH RECEIPT", [10, 80, 200, 110]), ("d", "Total", [0, 629, 77, 659]),
                   ("e", "RM40.00", [453, 644, 558, 674])])]
    split = Document.from_results({"document_id": "d", "status": "done",
                                   "pages": [{"page_index": 0, "width": 600, "height": 800}], "regions": regions})
    assert extract_fields(split)["total"].text == "RM40.00"


def test_a_date_with_a_time_glued_on():
    assert parse_date("Date : 09/02/201811:40") == (date(2018, 2, 9), (7, 17))
    assert parse_date("09/02/20181") is None and parse_date("1/2/20181") is None


@pytest.mark.parametrize(("top", "vendor"), [
    (["19. JALAN KANCIL.,", "OFF JALAN PUDU", "55100 KUALA LUMPUR", "MALAYSIA"], None),  # the name was a logo
    (["PUSAT DAGANGAN PHILEO DAMANSARA", "UNIT 105, BLOCK A, PUSAT DAGANGAN", "NO. 9, JALAN 16/11, 46350 PETALING JAYA",
      "MYNEWS RETAIL SB(306295-X) FKA BISON STORES SB"], "MYNEWS RETAIL SB"),  # below the address, with a legal form
    (["SLF CASH & CARRY (002107265- V) [97", "NO. 15 JLN TSJ2,TMN SUBANG JASA."], "SLF CASH & CARRY"),
    (["ONE ONE THREE SEAFOOD RESTAURANT SDN DID", "NO 1 JALAN SATU"], "ONE ONE THREE SEAFOOD RESTAURANT SDN BHD"),
    (["MR. D.1.Y. (M) SDN BHD", "NO 1 JALAN SATU"], "MR. D.I.Y. (M) SDN BHD"),
    (["AIK_HUAT HARDWARE SDN BHD", "NO 1 JALAN SATU"], "AIK HUAT HARDWARE SDN BHD"),
    (["AIK HUAT HARDWARE ENTERPRISE (SETIA ALAM)SDN BHD", "NO 1 JALAN SATU"],
     "AIK HUAT HARDWARE ENTERPRISE (SETIA ALAM) SDN BHD"),  # a space outside parentheses, as printed
    (["Golden Arches Restaurants Sdn Bhd", "NO 1 JALAN SATU"], "Golden Arches Restaurants Sdn Bhd"),  # case kept
    (["Zero Rated Tax (ZR) Standard Rated Tax S GST @ 6%: Nett of Tax: Change: Tendered: Cash Items count: 1",
      "NO 1 JALAN SATU"], None),  # labels read as one line are no name
    (["SANYU STATIONERY SHOP", "NO. 31G, JALAN SETIA INDAH", "40170 SETIA ALAM", "Owned By :",
      "SANYU SUPPLY SDN BHD (1135772-K)"], "SANYU STATIONERY SHOP"),  # the owner is not the vendor
    (["THE STORE (MALAYSIA) SDN BHD C8199K)", "NO 1 JALAN SATU"], "THE STORE (MALAYSIA) SDN BHD"),  # ( read as C
    ([". KMF FOODICIOUS SDN BHD (1132106-H)", "NO 1 JALAN SATU"], "KMF FOODICIOUS SDN BHD"),  # a stray mark first
    (["(M) ACME SDN BHD", "NO 1 JALAN SATU"], "(M) ACME SDN BHD"),  # a parenthesis first is printed
    (["13.50 cash", "NO 1 JALAN SATU"], None),  # an amount's line (a page read upside down) is no name
    (["1i rubin", "l8 ACME TRADING", "NO 1 JALAN SATU"], "ACME TRADING"),  # a handwritten mark before the name
    (["A1 ACME TRADING", "NO 1 JALAN SATU"], "A1 ACME TRADING"),  # capitals: part of the name
    (["ACME HARDWARE.", "ENTERPRISE (KL", "CITY) SDN BHD", "NO 1 JALAN SATU"],
     "ACME HARDWARE ENTERPRISE (KL CITY) SDN BHD"),  # a period after a whole word, the name going on: a speck
    (["ACME BROS.", "ENTERPRISE (KL", "CITY) SDN BHD", "NO 1 JALAN SATU"],
     "ACME BROS. ENTERPRISE (KL CITY) SDN BHD"),  # an abbreviation's: kept
])
def test_the_vendor_is_no_address_line_and_ends_at_its_registration_number(top, vendor):
    f = extract_fields(doc([*top, "TEL: 03-2211 4455", "TAX INVOICE", ("TOTAL", "9.00")]))
    assert (f["vendor_name"].text if "vendor_name" in f else None) == vendor


def test_a_legal_form_line_joins_a_cut_name_even_read_unsure():
    rows = ["POPULAR BOOK-", "CO SDN BHD", "(Company No. 113825-W)", "No 8, Jalan 7/118B, Desa Tun Razak",
            "56000 Kuala Lumpur, Malaysia", "Tel : 03-41424540", ("TOTAL", "9.00")]
    regions = [{"region_id": f"r{i}", "page_index": 0, "line_index": i, "order": i, "box": [10, 30 * i, 400, 30 * i + 20],
                "text": t if isinstance(t, str) else " ".join(t), "confidence": 0.66 if i == 1 else 0.99}
               for i, t in enumerate(rows)]
    d = Document.from_results({"document_id": "d", "status": "done",
                               "pages": [{"page_index": 0, "width": 600, "height": 800}], "regions": regions})
    f = extract_fields(d)
    assert f["vendor_name"].text == "POPULAR BOOK- CO SDN BHD"
    assert f["vendor_address"].text == "No 8, Jalan 7/118B, Desa Tun Razak 56000 Kuala Lumpur, Malaysia"


@pytest.mark.parametrize(("lines", "address"), [
    (["PARADIGM MALL", "LOT NO.: 4F-27 & 4FK-38, 4TH FLOOR", "GST ID: 000707211264"],
     "PARADIGM MALL LOT NO.: 4F-27 & 4FK-38, 4TH FLOOR"),  # an address's colon; a label's ends it
    (["LOT 204 & 205, JALAN BATU 12 1/4, CO. REG. NO.: 946207-D", "KG. DUSUN NANDING, 43100 HULU LANGAT"],
     "LOT 204 & 205, JALAN BATU 12 1/4, KG. DUSUN NANDING, 43100 HULU LANGAT"),  # a registration number beside it
    (["No: G3, BIk G, JIn PJU 1A/3,", "47301 Petaling Jaya(Selangor)"],
     "No: G3, Blk G, Jln PJU 1A/3, 47301 Petaling Jaya (Selangor)"),  # I read for l; a space outside parentheses
    (["NO. 17-G, JALAN SETIA INDAH,", "4D170 SHAH ALAM,"], "NO. 17-G, JALAN SETIA INDAH, 40170 SHAH ALAM,"),
    (["NO. 17-G, JALAN SETIA INDAH,", "LOT 4O1 SHAH ALAM"], "NO. 17-G, JALAN SETIA INDAH, LOT 4O1 SHAH ALAM"),
    (["NO 43-45-47G,", "TAMAN SEJATI,", "QTY PRICE DISC AMT", "GP GREENCELL AAA 4+2"],
     "NO 43-45-47G, TAMAN SEJATI,"),  # a house number is no registration number; the item header ends it
    (["Lot 3, Jalan Pelabur 23/1,", "40300 Shah Alam, 'Selangor."], "Lot 3, Jalan Pelabur 23/1, 40300 Shah Alam, Selangor."),
    (["Block B, Jalan PJU 9/1, D'sara Avenue,", "52000 'Bandar' KL"],
     "Block B, Jalan PJU 9/1, D'sara Avenue, 52000 'Bandar' KL"),  # inside a word, or closed: kept
    (["No.1, Jin Puteri 1/6,", "47100 Puchong"], "No.1, Jln Puteri 1/6, 47100 Puchong"),  # Jln's l read as i
    (["NO.1, J1N PUTERI 1/6, TAMAN JIN,", "47100 PUCHONG"],
     "NO.1, JLN PUTERI 1/6, TAMAN JIN, 47100 PUCHONG"),  # as 1; before no word: kept
    (["LOT P.T 2811, JALAN ANGSA,", "40150 SHAH ALAM, SELANGOR D.E"],
     "LOT P.T. 2811, JALAN ANGSA, 40150 SHAH ALAM, SELANGOR D.E."),  # a dotted abbreviation closes with a period
    (["F.K06, JALAN ANGSA, SEK.U3,", "40150 SHAH ALAM, SELANGOR D E"],
     "F.K06, JALAN ANGSA, SEK.U3, 40150 SHAH ALAM, SELANGOR D E"),  # no abbreviation of single letters
])
def test_address_lines_and_where_they_stop(lines, address):
    f = extract_fields(doc(["ACME TRADING SDN BHD", *lines, ("TOTAL", "9.00")]))
    assert f["vendor_address"].text == address


def _with_probs(text: str, unsure: set[int]) -> list[float]:
    return [0.1 if i in unsure else 0.99 for i in range(len(text))]


def test_spaces_the_recogniser_was_unsure_of_next_to_punctuation_are_dropped_from_the_address():
    line = "NO.50 , JALAN PBS 14/11, KAWASAN BUKIT SERDANG,"
    d = doc(["ACME TRADING SDN BHD", line, "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    region = d.pages[0].lines[1].regions[0].region_id
    # around the first comma, after the second; the last one is between letters (kept: above UNSURE_WORD_SPACE)
    unsure = {line.index(" ,"), line.index(" ,") + 2, line.index(", K") + 1}
    probs = _with_probs(line, unsure)
    probs[line.index("N P") + 1] = (rf.UNSURE_WORD_SPACE + rf.UNSURE_SPACE) / 2
    f = extract_fields(d, char_probs={region: probs})
    assert f["vendor_address"].text == "NO.50,JALAN PBS 14/11,KAWASAN BUKIT SERDANG,"
    assert extract_fields(d)["vendor_address"].text == line  # no probabilities: as read
    sure = {region: [rf.UNSURE_SPACE] * len(line)}
    assert extract_fields(d, char_probs=sure)["vendor_address"].text == line  # at the threshold: kept
    assert extract_fields(d, char_probs={region: [0.1] * 3})["vendor_address"].text == line  # does not fit the text
    regions = [{"region_id": region, "char_probs": probs}]
    assert document_fields(d, regions)["vendor_address"]["text"] == "NO.50,JALAN PBS 14/11,KAWASAN BUKIT SERDANG,"


def test_split_amount_candidates_beyond_max_candidates_are_not_read():
    def with_amounts(n: int) -> Document:
        return doc(["ACME TRADING", "NO 1 JALAN SATU 50000 KL", "CASH RECEIPT", *["ITEM 1. 00"] * n, "TOTAL 7. 70"])

    assert extract_fields(with_amounts(rf.MAX_CANDIDATES - 1))["total"].value == Decimal("7.70")
    assert "total" not in extract_fields(with_amounts(rf.MAX_CANDIDATES))


def test_periods_the_recogniser_was_unsure_of_between_words_of_the_address_read_as_commas():
    line, beside = "NO.32 & 33. JALAN SR 1/9. L.OT 5 TAMAN.SERDANG.", "43300 SERI. KEMBANGAN."
    d = doc(["ACME TRADING SDN BHD", (line, beside), "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    first, second = (r.region_id for r in d.pages[0].lines[1].regions)
    # every period unsure but the one after "1/9": "33." and "TAMAN." are commas; "NO.32" (a digit
    # after), "L.OT" (one letter before) and the line's last period are kept; the second region's
    # "SERI." is sure. The address then separates its parts with a comma ("33, "), so the sure
    # periods after "1/9", "SERDANG" (before a number) and "SERI" are its commas too (_ADDRESS_PERIOD)
    unsure = {i for i, c in enumerate(line) if c == "."} - {line.index("9.") + 1}
    probs = {first: _with_probs(line, unsure), second: _with_probs(beside, {len(beside) - 1})}
    want = "NO.32 & 33, JALAN SR 1/9, L.OT 5 TAMAN,SERDANG, 43300 SERI, KEMBANGAN."
    assert extract_fields(d, char_probs=probs)["vendor_address"].text == want
    at_threshold = {first: [rf.UNSURE_PERIOD] * len(line)}  # sure: no comma anywhere, every period kept
    assert extract_fields(d, char_probs=at_threshold)["vendor_address"].text == f"{line} {beside}"


@pytest.mark.parametrize(("mark", "confidence", "vendor"), [
    ("lu", 0.33, "SYARIKAT PERNIAGAAN GIN KEE"),  # a logo's edge read as letters: left out
    ("lu", rf.NOISE_CONFIDENCE, None),  # at the bound: text, and a name starting in lower case is none
    ("lum", 0.33, "SYARIKAT PERNIAGAAN GIN KEE"),
    ("luma", 0.33, None),  # four characters: text
    ("l12", 0.33, None),  # a digit: text (and no two-character mark before a name, _LEAD_MARK)
])
def test_a_short_unsure_mark_beside_a_line_is_noise(mark, confidence, vendor):
    d = doc([(mark, "SYARIKAT PERNIAGAAN GIN KEE"), "NO 290, JALAN AIR PANAS,", "TEL: 03-2211 4455",
             ("TOTAL", "9.00")], confidences={mark: confidence})
    f = extract_fields(d)
    assert (f["vendor_name"].text if "vendor_name" in f else None) == vendor
    if vendor:
        assert f["vendor_name"].region_ids == (d.pages[0].lines[0].regions[1].region_id,)


@pytest.mark.parametrize(("second", "address", "sure"), [
    # a word follows; sure, it is a comma too, as the address separates "U13, 40170" with one
    ("SEKSYEN U13, 40170 SHAH ALAM.", "NO. 17-G, SETIA ALAM, SEKSYEN U13, 40170 SHAH ALAM.",
     "NO. 17-G, SETIA ALAM, SEKSYEN U13, 40170 SHAH ALAM."),
    ("40170 SHAH ALAM.", "NO. 17-G, SETIA ALAM. 40170 SHAH ALAM.", None),  # a number follows: kept
])
def test_an_unsure_period_ending_an_address_line_before_a_word_reads_as_a_comma(second, address, sure):
    first = "NO. 17-G, SETIA ALAM."
    d = doc(["ACME TRADING SDN BHD", first, second, "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    ids = [line.regions[0].region_id for line in d.pages[0].lines[1:3]]
    probs = {ids[0]: _with_probs(first, {len(first) - 1}), ids[1]: _with_probs(second, {len(second) - 1})}
    assert extract_fields(d, char_probs=probs)["vendor_address"].text == address  # the last line's: kept
    probs[ids[0]] = _with_probs(first, set())
    assert extract_fields(d, char_probs=probs)["vendor_address"].text == (sure or f"{first} {second}")


def test_a_line_is_as_sure_as_its_characters_are():
    # three regions, the short one unsure: by region the line's mean is 0.79 (a misread logo), by character 0.94
    d = doc([("SLF CASH & CARRY", "(002107265-V)", "<P7"), "NO. 15 JLN TSJ2, TMN SUBANG JASA", "TEL: 03-7734 3662",
             ("TOTAL", "9.00")], confidences={"<P7": 0.39})
    assert extract_fields(d)["vendor_name"].text == "SLF CASH & CARRY"
    d = doc([("SLF CASH & CARRY", "<P7"), "NO. 15 JLN TSJ2, TMN SUBANG JASA", ("TOTAL", "9.00")],
            confidences={"SLF CASH & CARRY": 0.8, "<P7": 0.1})
    assert "vendor_name" not in extract_fields(d)  # (16 * 0.8 + 3 * 0.1) / 19 < 0.8


@pytest.mark.parametrize(("lines", "address"), [
    # the address separates its parts with commas: a period after a number or a word of 4+ letters
    # before a word or number is one (on the line and at a line's end), read sure
    (["NO.32 & 33. JALAN SR 1/9. SEKSYEN 9,", "TAMAN SERDANG RAYA.", "43300 SERI KEMBANGAN"],
     "NO.32 & 33, JALAN SR 1/9, SEKSYEN 9, TAMAN SERDANG RAYA, 43300 SERI KEMBANGAN"),
    # no comma between its parts: periods are what it prints
    (["F-G-01 JALAN SS 6/5B DATARAN GLOMAC. KELANA JAYA", "47301 PETALING JAYA. SELANGOR"],
     "F-G-01 JALAN SS 6/5B DATARAN GLOMAC. KELANA JAYA 47301 PETALING JAYA. SELANGOR"),
    # abbreviations of three letters or fewer, a period inside a word, the last period: kept
    (["LOT P.T. 2811, KG. DUSUN NANDING, JLN. BESAR,", "43100 HULU LANGAT, SEL."],
     "LOT P.T. 2811, KG. DUSUN NANDING, JLN. BESAR, 43100 HULU LANGAT, SEL."),
    (["NO. 53, JALAN BESAR.", "D'SARA. AVENUE 3"], "NO. 53, JALAN BESAR, D'SARA. AVENUE 3"),  # after an apostrophe: kept
    (["19. JALAN KANCIL.,", "OFF JALAN PUDU, 55100 KUALA LUMPUR"],
     "19, JALAN KANCIL, OFF JALAN PUDU, 55100 KUALA LUMPUR"),  # a period before a comma: a speck
])
def test_in_an_address_with_commas_a_period_between_its_parts_is_a_comma(lines, address):
    f = extract_fields(doc(["ACME TRADING SDN BHD", *lines, "TEL: 03-2211 4455", ("TOTAL", "9.00")]))
    assert f["vendor_address"].text == address


def test_spaces_the_recogniser_was_unsure_of_inside_a_word_are_dropped_from_vendor_and_address():
    name, line = "GAR DENIA BAKERIES (K L) SDN BHD", "40150 SHAH AL AM, SELANGOR"
    d = doc([name, line, "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    ids = [ln.regions[0].region_id for ln in d.pages[0].lines[:2]]

    def probs(text: str, words: tuple[str, ...], p: float) -> list[float]:
        spaces = {text.index(w) + w.index(" ") for w in words}
        return [p if i in spaces else 0.99 for i in range(len(text))]

    def read(p: float) -> tuple[str, str]:
        f = extract_fields(d, char_probs={ids[0]: probs(name, ("R D", "K L"), p), ids[1]: probs(line, ("L AM",), p)})
        return f["vendor_name"].text, f["vendor_address"].text

    assert read(rf.UNSURE_WORD_SPACE - 0.01) == ("GARDENIA BAKERIES (KL) SDN BHD", "40150 SHAH ALAM, SELANGOR")
    assert read(rf.UNSURE_WORD_SPACE) == (name, line)  # at the bound: kept
    f = extract_fields(d)
    assert (f["vendor_name"].text, f["vendor_address"].text) == (name, line)  # no probabilities: as read


@pytest.mark.parametrize(("text", "printed", "iso"), [
    ("Date: 26-05--2018 15:16", "26-05-2018", "2018-05-26"),  # a separator doubled
    ("24 -Mar-2018", "24-Mar-2018", "2018-03-24"),  # a space beside a separator
    ("12 / 01/2019", "12/01/2019", "2019-01-12"),
    ("Date; 0ct 3, 2016 12:16:25 PM", "Oct 3, 2016", "2016-10-03"),  # a month's O read as zero
    ("14 N0V 2018", "14 NOV 2018", "2018-11-14"),
    ("14 MAR 2018", "14 MAR 2018", "2018-03-14"),  # spaces without a separator: as printed
])
def test_a_date_is_given_as_printed_whatever_the_recogniser_did_to_its_separators_and_months(text, printed, iso):
    f = extract_fields(doc(["ACME TRADING SDN BHD", "NO 1 JALAN SATU", text, ("TOTAL", "9.00")]))
    assert (f["date"].text, f["date"].value) == (printed, iso)


def test_parse_date_reads_a_doubled_separator_and_a_zero_for_o():
    assert parse_date("26-05--2018")[0] == date(2018, 5, 26)
    assert parse_date("0CT 3, 2016")[0] == date(2016, 10, 3)
    assert parse_date("26-05---2018") is None  # three: no date


@pytest.mark.parametrize(("line", "total"), [
    (("TOTAL", "RM 14-10"), ("14.10", Decimal("14.10"))),  # the decimal point read as a hyphen after RM
    (("TOTAL", "RM14-10"), ("RM14.10", Decimal("14.10"))),
])
def test_a_currency_s_amount_with_its_point_read_as_a_hyphen(line, total):
    f = extract_fields(doc(["ACME TRADING SDN BHD", "NO 1 JALAN SATU", "CASH RECEIPT", line]))
    assert (f["total"].text, f["total"].value) == total


def test_a_hyphen_without_a_currency_is_no_decimal_point():
    f = extract_fields(doc(["ACME TRADING SDN BHD", "NO 1 JALAN SATU", "CASH RECEIPT", ("TOTAL", "14-10"),
                            ("CASH", "20.00")]))
    assert f.get("total") is None or f["total"].value != Decimal("14.10")


@pytest.mark.parametrize(("top", "vendor"), [
    (["COSWAY (M) SDN BHD (E0118-A)"], "COSWAY (M) SDN BHD"),  # a letter before the registration number's digits
    (["SKCA HARDWARE & TIMBER SDN. BHD.LLT"], "SKCA HARDWARE & TIMBER SDN. BHD."),  # glued after the legal form
    (["ACME SDN. BHD. KL"], "ACME SDN. BHD."),  # a branch after it: dropped (the name ends with its legal form)
    (["ACME SDN. BHD. (KL)"], "ACME SDN. BHD. (KL)"),  # a parenthesis after it: kept
    (["ACME CO. (M) SDN BHD CITY MALL"], "ACME CO. (M) SDN BHD"),  # the last legal form ends the name
    (["ACME SDN BHDX CITY"], "ACME SDN BHDX CITY"),  # no legal form: a word that starts with one
    (["ACME FRESH MARKET S/B."], "ACME FRESH MARKET S/B"),  # a period after S/B: a speck
    (["ACME SDN. BHD."], "ACME SDN. BHD."),  # other legal forms keep theirs
])
def test_what_follows_a_vendor_s_legal_form(top, vendor):
    f = extract_fields(doc([*top, "NO 1 JALAN SATU", "TEL: 03-2211 4455", "TAX INVOICE", ("TOTAL", "9.00")]))
    assert f["vendor_name"].text == vendor


def test_a_name_whose_only_legal_form_is_co_beats_the_logo_lines_above_it():
    """"Co." followed by a space is a legal form (the vendor's line; the address starts after it), and
    the branch printed after it on the name's line is not part of the name."""
    f = extract_fields(doc(["BEAN HOUSE", "COFFEE", "BEAN HOUSE COFFEE CO. CITY MALL", "LOT 5, First Floor, City Mall,",
                            "50000 Kuala Lumpur.", "TEL: 03-2211 4455", "TAX INVOICE", ("TOTAL", "9.00")]))
    assert f["vendor_name"].text == "BEAN HOUSE COFFEE CO."
    assert f["vendor_address"].text == "LOT 5, First Floor, City Mall, 50000 Kuala Lumpur."


@pytest.mark.parametrize(("last", "unsure", "address"), [
    ("KUALA SELANGOR.U", True, "NO 43, TAMAN SEJATI, KUALA SELANGOR."),  # a speck after the last word's period
    ("KUALA SELANGOR.U", False, "NO 43, TAMAN SEJATI, KUALA SELANGOR.U"),  # read sure: kept
    ("SELANGOR D.E", True, "NO 43, TAMAN SEJATI, SELANGOR D.E."),  # a dotted abbreviation: its letter kept
])
def test_an_unsure_letter_glued_after_an_address_line_s_last_period_is_a_speck(last, unsure, address):
    d = doc(["ACME TRADING SDN BHD", "NO 43, TAMAN SEJATI,", last, "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    region = d.pages[0].lines[2].regions[0].region_id
    probs = _with_probs(last, {len(last) - 1} if unsure else set())
    assert extract_fields(d, char_probs={region: probs})["vendor_address"].text == address


@pytest.mark.parametrize("label", ["local After Adj Incl GST", "AMOUNT AFTER ROUNDING"])
def test_an_amount_after_the_rounding_adjustment_is_the_total_whatever_its_total_word_reads(label):
    f = extract_fields(doc(["ACME TRADING SDN BHD", "NO 1 JALAN SATU", "TAX INVOICE", ("Sub-total", "88.97"),
                            ("Total Sales Incl GST", "88.97"), ("Rounding Adj", "-0.02"), (label, "88.95"),
                            ("CASH", "100.00")]))
    assert f["total"].value == Decimal("88.95")


@pytest.mark.parametrize(("name", "split", "vendor"), [
    ("FUYI MINI MARKET", "MINI MARKET", "FUYI MINI MARKET"),  # two words of four letters or more: kept apart
    ("FUYI STATI ONERY", "STATI ONERY", "FUYI STATIONERY"),  # long pieces that are no words: one word
    ("FUYI MART SHOP", "MART SHOP", "FUYI MART SHOP"),  # at the bound (four letters): words, kept apart
    ("FUYI BIG MARKET", "BIG MARKET", "FUYI BIGMARKET"),  # a piece of three letters: a split word
])
def test_an_unsure_space_between_two_whole_words_is_kept(name, split, vendor):
    d = doc([name, "NO 1 JALAN SATU", "TEL: 03-2211 4455", ("TOTAL", "9.00")])
    region = d.pages[0].lines[0].regions[0].region_id
    probs = _with_probs(name, {name.index(split) + split.index(" ")})
    assert extract_fields(d, char_probs={region: probs})["vendor_name"].text == vendor


def test_preload_loads_the_word_list_before_the_first_receipt_asks():
    from ocrstream.ocr import receipt_fields
    from ocrstream.ocr.postprocess.lexicon import known_words

    known_words.cache_clear()
    receipt_fields.preload()
    assert known_words.cache_info().currsize == 1

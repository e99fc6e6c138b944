"""Receipt fields without a template: vendor, address, date, totals, tax, currency, line items.

:func:`extract_fields` reads a built :class:`~ocrstream.ocr.document.Document` (its pages'
visual lines in reading order, their regions' text, boxes, word boxes and confidences; a short
unsure mark beside a line's text, a logo's edge read as letters, is left out: :data:`NOISE_CONFIDENCE`)
and returns the fields it finds, by name:

=================  =========================================================================
name               how it is found (layout-aware rules, no learned weights)
=================  =========================================================================
``vendor_name``    the first prominent line at the top of the page that is not a document
                   title, registration number, phone, date or address line (a house or lot
                   number first, a postcode before a town, a street word); a nearby line
                   holding a legal form (SDN BHD, S/B, SB, LTD, ENTERPRISE, ...) wins over a
                   brand line above it; below an address line only a legal-form line is the
                   vendor, and never the line after "Owned by"; a line holding only "Co." as
                   its legal form when no other is printed; a name cut at "&" or "-" or
                   followed by a line holding a legal form is joined; the name ends at its
                   registration number ("(E0118-A)" too); a mark before it ("l8 ") is not
                   read; legal forms and digits misread in one letter are read as printed
                   ("SDN DID", "D.1.Y."), letters glued after a legal form's period dropped
                   ("BHD.LLT"), a period after a closing "S/B" or after a whole word ending a
                   line the name goes on from dropped, the words after its last legal form
                   dropped (a branch: "CO. THE GARDENS MALL"), spaces the recogniser inserted
                   unsure between two letters dropped ("GAR DENIA", :data:`UNSURE_WORD_SPACE`;
                   not between two words: "MINI MARKET").
``vendor_address`` the lines after the vendor (registration numbers skipped) up to the first
                   phone, fax, e-mail, tax-number, document-title, date, amount or item-header
                   line or a label's colon ("LOT NO.: 4F-27" is an address's); a registration
                   number printed beside a line dropped; printed above the vendor, or found
                   without one, it starts at the first address line; at most
                   :data:`MAX_ADDRESS_LINES`, and one of them holds a digit. Spaces the
                   recogniser was unsure of next to punctuation are dropped and periods it
                   was unsure of between words read as commas (``char_probs``), a
                   postcode's digit misread as a letter ("4D170") is read as a digit, a quote
                   mark opening a word that nothing closes ("Alam, 'Selangor") and an unsure
                   letter glued after a line's last word and period ("SELANGOR.U") are specks; in
                   an address with commas between its parts, a period after a number or a
                   whole word before the next part is one ("33. JALAN" -> "33, JALAN"), a
                   period before a comma a speck; spaces splitting a word as in the vendor.
                   Vendor and address: a space outside parentheses as printed, a capital I
                   between a capital and a small letter read as l ("JIn" -> "Jln"); in the
                   address, "Jin" before a word is "Jln" and a dotted abbreviation closes
                   with its period ("D.E" -> "D.E.").
``date``           every date token (day first ``22/12/2017``, ``01-03-18``, ``2018-03-01``,
                   ``14 MAR 2018``, ``OCT 3, 2016``, a time glued on ``09/02/201811:40``) that
                   is a real date in 1990..2069; a DATE label on its line and an early
                   position win. Its text as printed: a separator the recogniser doubled or
                   spaced read single ("26-05--2018"), a month's O read as zero as O ("0ct").
``total``          amounts (two decimals; a currency's digits misread as letters "RMI11.90",
                   a split "102. 40", a point read as a hyphen after a currency "RM 14-10"
                   read as printed) on lines labelled TOTAL (as OCR reads
                   it: "lotal", "Tota l") / GRAND TOTAL / NET AMT / AMOUNT TO BE PAID / (TOTAL)
                   AFTER ROUNDING or ADJ (the total word misread: "local After Adj") / ...
                   (not SUBTOTAL, TOTAL QTY, TOTAL EXCL., "includes 6% GST" statements, cash
                   accepted, tax summaries), or the amount beside such a label (the same row,
                   or the next visual line overlapping it); preferred
                   when it equals subtotal + tax (+ rounding) or cash - change (the cash when
                   no change is printed); the largest wins a tie. The amount paid beats a
                   labelled total that agrees with nothing when subtotal + tax or the tax
                   summary confirm it; without a total label the amount paid is the total
                   when confirmed so or labelled PAID (low confidence).
``subtotal``       the amount of a SUBTOTAL / SUB-TOTAL / TOTAL EXCL. line.
``tax``            the amount of a GST / SST / VAT / TAX line that is not a rate or a tax number.
``currency``       an explicit code or symbol printed with the amounts (RM/MYR, S$/SGD, USD,
                   EUR/€, GBP/£, ...): ISO 4217 code; a bare ``$`` gives no currency.
``line_items``     rows between the item header (or the top) and the subtotal/total with an
                   amount at the end: description, quantity, unit price, amount.
=================  =========================================================================

Each :class:`ReceiptField` carries the text as printed (the token or lines read), a typed
value (ISO date text; :class:`decimal.Decimal` amount; ISO currency code; text; a list of
item dicts), a confidence in [0, 1] (the regions' mean character probability times the rule's
certainty), the page and the region ids and boxes it came from (word boxes where the token is
one word, else region boxes; page pixels).

Absent fields are absent: a page is only read as a receipt when it holds at least one amount
and a total label or a receipt word (:data:`_RECEIPT_WORDS`); other pages, text in another
language (amounts with a decimal comma, unknown labels) and empty pages give ``{}``, never an
error. Bounded: at most :data:`MAX_PAGES` pages, :data:`MAX_LINES` lines per page,
:data:`MAX_LINE_CHARS` characters per line, :data:`MAX_CANDIDATES` amount and date candidates
per page and :data:`MAX_ITEMS` line items; what is beyond a bound is not read.

Measured with ``bench/bench_fields.py`` (SROIE task 3, our own OCR; figures in the README).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from ocrstream.ocr.document import Box, Document, Line, Page, Region
from ocrstream.ocr.postprocess.lexicon import known_words

__all__ = [
    "FIELD_NAMES", "MAX_ADDRESS_LINES", "MAX_CANDIDATES", "MAX_ITEMS", "MAX_LINE_CHARS", "MAX_LINES",
    "MAX_PAGES", "ReceiptField", "document_fields", "extract_fields", "fields_json", "parse_amount", "parse_date",
    "preload",
]

#: every field name :func:`extract_fields` may return.
FIELD_NAMES = ("vendor_name", "vendor_address", "date", "total", "subtotal", "tax", "currency", "line_items")
#: pages of a document read (the first ones); lines of a page read (the first in reading order).
MAX_PAGES = 20
MAX_LINES = 400
#: characters of a line read (the rest is ignored).
MAX_LINE_CHARS = 200
#: amount candidates and date candidates kept per page (the first in reading order).
MAX_CANDIDATES = 200
#: line items kept; lines of an address.
MAX_ITEMS = 100
MAX_ADDRESS_LINES = 5
#: the years a receipt date may have (others are not dates: "21 - 6/72" is a price, not 1972).
MIN_YEAR, MAX_YEAR = 1990, 2069
#: lines from the top of a page searched for the vendor; the least confidence of a vendor line.
VENDOR_SEARCH_LINES = 8
VENDOR_MIN_CONFIDENCE = 0.8
#: words of a vendor line at most (a longer line is labels or columns read as one).
VENDOR_MAX_WORDS = 10

# ----------------------------------------------------------------------------- tokens

_AMOUNT = re.compile(
    r"(?<![\w.,/:-])(?P<cur>RM|MYR|S\$|US\$|USD|SGD|EUR|GBP|\$|€|£)?\s?"
    r"(?P<num>-?(?:\d{1,3}(?:,\d{3})+|\d{1,7})\.\d{2})(?![\d.,/:]?\d)")
_CURRENCY_CODES = {"RM": "MYR", "MYR": "MYR", "S$": "SGD", "SGD": "SGD", "US$": "USD", "USD": "USD",
                   "EUR": "EUR", "€": "EUR", "GBP": "GBP", "£": "GBP"}
_CURRENCY_WORD = re.compile(r"(?<![A-Za-z])(RM|MYR|SGD|USD|EUR|GBP)(?![A-Za-z])|(S\$|US\$|€|£)")

_MONTHS = {m: i for i, names in enumerate(
    [("JAN", "JANUARY"), ("FEB", "FEBRUARY"), ("MAR", "MARCH"), ("APR", "APRIL"), ("MAY",), ("JUN", "JUNE"),
     ("JUL", "JULY"), ("AUG", "AUGUST"), ("SEP", "SEPT", "SEPTEMBER"), ("OCT", "OCTOBER"), ("NOV", "NOVEMBER"),
     ("DEC", "DECEMBER")], start=1) for m in names}
_MONTH = r"(?P<mon>JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|AUG(?:UST)?" \
         r"|SEPT?(?:EMBER)?|[O0]CT(?:OBER)?|N[O0]V(?:EMBER)?|DEC(?:EMBER)?)"
_DATE_PATTERNS = (
    re.compile(r"(?<![\d/.-])(?P<y>(?:19|20)\d{2})(?P<s>[/.-])(?P<m>\d{1,2})(?P=s)(?P<d>\d{1,2})(?![\d/.-]*\d)"),
    re.compile(r"(?<![\d/.-])(?P<d>\d{1,2})\s?(?P<s>[/.-])(?P=s)?\s?(?P<m>\d{1,2})\s?(?P=s){1,2}\s?(?P<y>\d{4}|\d{2})"
               r"(?:(?![\d/.]*\d)|(?<=\d{4})(?=\d{1,2}:\d{2}))"),  # "09/02/201811:40": a time glued on
    re.compile(r"(?<![\dA-Z])(?P<d>\d{1,2})[\s/.-]*" + _MONTH + r"[\s/.,-]*(?P<y>\d{4}|\d{2})(?!\d)", re.I),
    re.compile(r"(?<![A-Z])" + _MONTH + r"[\s.]*(?P<d>\d{1,2}),?\s*(?P<y>\d{4})(?!\d)", re.I),
)

# ----------------------------------------------------------------------------- labels

#: "total" as OCR reads it: a first letter misread ("lotal", "1otal"), a space inside ("Tota l").
_T = r"(?:\b[tl1i]|(?<=[^\sA-Za-z])[tl1i])\s?[o0]\s?t\s?a\s?[l1|]"
_TOTAL_STRONG = re.compile(
    r"grand\s*" + _T + r"|net+\s*" + _T + r"|net+\s*am(?:oun)?t\b|" + _T + r"\s*amount|" + _T + r"\s*amt|amount\s*due|"
    + _T + r"\s*due|" + _T + r"\s*payable|amount\s*payable|rounded\s*" + _T + r"|" + _T + r"\s*rounded|"
    + _T + r"\s*incl|" + _T + r"\s*\(?rm\)?\s*:?\s*$|" + _T + r"\s*sales?\s*\(?incl|balance\s*due|"
    + _T + r"\s*\(inclusive|" + _T + r"\s*\(?myr\)?|jumlah|\bafter\s*(?:rounding|round|adj)|"
    r"amount\s*to\s*(?:be\s*)?pa(?:id|y)|amount\s*incl|amt\s*paid\s*incl|" + _T + r"\s*\(?incl", re.I)
_TOTAL = re.compile(_T + r"|amount\s*due|\bdue\b|" + _TOTAL_STRONG.pattern, re.I)
_NOT_TOTAL = re.compile(
    r"sub\s*-?\s*" + _T + r"|" + _T + r"\s*(?:excl|exclusive|before|qty|quantity|items?|item\(s\)|no\b|number|"
    r"pcs|units?|tax|gst|sst|vat|saving|discount|disc\b|weight|points?|tips?|rounding)|excl\b|"
    r"\bqty\b|item\(?s\)?\s*:|\btax\s*code\b|change|pts\b|(?<!after\s)rounding\b|round\s*adj|"
    r"accepted|received|tendered|\binclud(?:es|ed|ing)\b.*%", re.I)
_SUBTOTAL = re.compile(r"sub\s*-?\s*t[o0]tal|t[o0]tal\s*excl|total\s*before\s*tax|amount\s*excl", re.I)
_TAX = re.compile(r"\b(?:gst|sst|vat|tax)\b(?!\s*(?:reg|id|no|num|invoice|code|summary|#))", re.I)
_NOT_TAX = re.compile(r"reg|invoice|summary|\bno\b|\bid\b|incl|excl|t[o0]tal\s*sales|amount\s*\(|code", re.I)
_ROUNDING = re.compile(r"round", re.I)
_CASH = re.compile(r"\b(?:cash|tender(?:ed)?|paid|pay|payment|visa|master|card|credit|accepted|received)\b", re.I)
_CHANGE = re.compile(r"\bchange\b|\bbalance\b(?!\s*due)", re.I)
_SUMMARY = re.compile(r"summary|\bsr\b\s*[@=]|\bzr\b\s*[@=]", re.I)

_DATE_LABEL = re.compile(r"\bdate\b|\btarikh\b|\bdated\b", re.I)
_NOT_DATE_LABEL = re.compile(r"expir|\bexp\b|valid|due\s*date|birth|\bdob\b|print", re.I)

#: words that make a page with amounts a receipt (besides a total label).
_RECEIPT_WORDS = re.compile(
    r"\b(?:receipt|invoice|cash(?:ier)?|change|qty|subtotal|sub-total|gst|sst|vat|tax|amount|price|"
    r"payment|paid|tender|bill|rounding)\b", re.I)

_TITLE = re.compile(
    r"^\W*(?:(?:simplified\s*|full\s*)?tax\s*invoice|invoice|(?:official\s*|cash\s*)?receipts?|cash\s*sales?|"
    r"cash\s*bill|bill|welcome|copy|duplicate|reprint|original|sales\s*receipt|tel|thank\s*you)\b", re.I)
_REG_NUMBER = re.compile(
    r"^\W*(?:co[\s.-]*(?:reg|no)|company\s*(?:reg|no)|reg\.?\s*no|roc|br\s*no|(?!no\b|lot\b|unit\b|blk\b)\(?\s*[a-z]{0,3}\s*\d[\d\s-]{3,}-?\s*[a-z]{0,2}\s*\)?\W*$|"
    r"gst|sst|tax\s*(?:id|no|reg))", re.I)
_PHONE = re.compile(r"\b(?:tel|tele?phone|phone|fax|h/?p|mobile|hotline|call|whatsapp|contact)\b|"
                    r"e-?mail|@\S+\.|www\.|https?://|\.com\b|\.my\b", re.I)
_ADDRESS_STOP = re.compile(
    r"\b(?:gst|sst|tax|invoice|receipt|cashier|date|time|table|order|counter|bill|member|served|"
    r"reg\.?\s*no|company\s*reg|co\.?\s*reg|business\s*reg|roc)\b", re.I)
_LEGAL_FORM = re.compile(
    r"\b(?:sdn\.?\s*bhd|bhd|berhad|s/?b|plt|ltd|limited|inc|llc|llp|gmbh|enterprises?|trading|"
    r"co\.|company|corporation|corp|restaurant|restoran)\b\.?", re.I)
_BOILERPLATE = re.compile(r"returnable|thank|order\s*(?:no|number|is)|promo|welcome|\bcopy\b|signature|customer|"
                         r"\bmember|\*{3}", re.I)
#: "Co." (company) followed by a space: :data:`_LEGAL_FORM`'s word boundary after its period misses it.
_COMPANY_ABBREVIATION = re.compile(r"\bco\.(?=\s|$)", re.I)
_STRICT_LEGAL = re.compile(r"\b(?:s[do0]n\.?\s*bhd|bhd|berhad|s/?b\b|plt|ltd|limited|inc|llc|llp|gmbh|co\.)", re.I)
_NOT_ADDRESS = re.compile(r"licensee|formerly|franchise|known\s+as|\b(?:co|br|roc)[\s.-]*(?:reg|no)\b", re.I)
_CONTINUATION = re.compile(r"\W*(?:restaurants?|restoran|co\b|company|enterprises?|trading|[^\s()]+\))", re.I)
#: a line that reads as an address: a house or lot number first ("NO. 15 JLN", "19. JALAN", "LOT 3,"), or a
#: five-digit postcode before a place name.
_ADDRESS_LIKE = re.compile(r"^\W*(?:no\.?\s*:?\s*\d|lot\s*\d|unit\s|\d+[A-Z]?(?:-\d+)?[.,]\s)|\b\d{5}\s+[A-Za-z]{3}", re.I)
#: street words (Malay and English) of an address line: such a line without a legal form is no vendor name.
_STREET = re.compile(r"\b(?:jalan|jln|lorong|lrg|persiaran|lebuhraya|road|street|avenue|taman|tmn|kampung|kg)\b\.?",
                     re.I)
_LEGAL_ONLY = re.compile(r"^\W*(?:\(m\)\s*)?(?:sdn\.?\s*bhd|bhd|berhad|s/b|plt|ltd|limited|inc|llc)\.?\W*$", re.I)


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class ReceiptField:
    """One field found on a receipt.

    Attributes:
        name: one of :data:`FIELD_NAMES`.
        text: as printed (the OCR text of the token, or of the lines joined by a space).
        value: typed value: ISO ``YYYY-MM-DD`` text (date), :class:`decimal.Decimal` (amounts),
            ISO 4217 code (currency), text (vendor, address), list of item dicts (line items:
            ``description`` text, ``quantity`` Decimal or None, ``unit_price`` Decimal or None,
            ``amount`` Decimal, ``region_ids``).
        confidence: in [0, 1]: the regions' mean confidence times the rule's certainty.
        page_index: the page it was read on.
        region_ids: the regions it came from, in reading order.
        boxes: ``(x0, y0, x1, y1)`` page pixels: word boxes of a one-word token, else its regions'.
        currency: ISO 4217 code of an amount when the page prints one (None otherwise).
    """

    name: str
    text: str
    value: Any
    confidence: float
    page_index: int
    region_ids: tuple[str, ...]
    boxes: tuple[Box, ...]
    currency: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The field as the results event's ``fields`` entry (JSON types): ``text``, ``value``
        (amounts as JSON numbers, line items as objects), ``valid`` (True), ``confidence`` (3
        decimals), ``page_index``, ``regions``, ``boxes`` (0.1 px), ``source`` ("receipt") and
        ``currency`` when known."""
        out: dict[str, Any] = {
            "text": self.text, "value": _json_value(self.value), "valid": True,
            "confidence": round(self.confidence, 3), "page_index": self.page_index,
            "regions": list(self.region_ids), "boxes": [[round(float(v), 1) for v in b] for b in self.boxes],
            "source": "receipt"}
        if self.currency:
            out["currency"] = self.currency
        return out


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def fields_json(fields: dict[str, ReceiptField]) -> dict[str, dict[str, Any]]:
    """``{name: field.as_json()}`` (the results event's and the Document's ``fields``)."""
    return {name: f.as_json() for name, f in fields.items()}


# ----------------------------------------------------------------------------- parsing

def parse_amount(text: str) -> tuple[Decimal, str | None, tuple[int, int]] | None:
    """The first amount with two decimals in ``text``: (value, currency prefix as printed or None,
    (start, end) of the token in ``text``); None when there is none. Thousands commas allowed
    ("1,234.50"); a decimal comma ("12,50") is not an amount."""
    m = _AMOUNT.search(text)
    if not m:
        return None
    return Decimal(m["num"].replace(",", "")), m["cur"], m.span()


def _year(text: str) -> int:
    """A printed year: four digits as they are, two digits 00-69 -> 20YY, 70-99 -> 19YY."""
    y = int(text)
    return y if y >= 100 else y + 2000 if y < 70 else y + 1900


def parse_date(text: str) -> tuple[date, tuple[int, int]] | None:
    """The first real date in ``text``: (date, (start, end) of the token); None when there is
    none. Layouts: ``YYYY-MM-DD`` (any of ``/ . -``), day first ``DD/MM/YYYY`` or ``DD/MM/YY``
    (month first when day first is no date, e.g. ``12/25/2018``), ``DD MON YYYY``,
    ``MON DD, YYYY``; the same separator twice; years :data:`MIN_YEAR`..:data:`MAX_YEAR` (two
    digits: 00-69 -> 20YY, 70-99 -> 19YY)."""
    found = _dates(text, 1)
    return found[0] if found else None


def _dates(text: str, limit: int) -> list[tuple[date, tuple[int, int]]]:
    """Up to ``limit`` real dates of ``text`` in order of position (overlapping matches dropped)."""
    hits: list[tuple[date, tuple[int, int]]] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            d = _to_date(m)
            if d is not None and not any(s < m.end() and m.start() < e for _, (s, e) in hits):
                hits.append((d, m.span()))
    hits.sort(key=lambda h: h[1][0])
    return hits[:limit]


def _to_date(m: re.Match[str]) -> date | None:
    groups = m.groupdict()
    year = _year(m["y"])
    if not MIN_YEAR <= year <= MAX_YEAR:
        return None
    day = int(m["d"])
    months = [_MONTHS[groups["mon"].upper().replace("0", "O")]] if groups.get("mon") else [int(m["m"])]
    if not groups.get("mon") and len(m["y"]) == 4 and m.start("y") < m.start("d"):  # year first
        pass
    elif not groups.get("mon"):
        months.append(-1)  # month first when day first fails (12/25/2018)
    for month in months:
        d, mo = (day, month) if month > 0 else (months[0], day)
        try:
            return date(year, mo, d)
        except ValueError:
            continue
    return None


# ----------------------------------------------------------------------------- page model

@dataclass
class _Row:
    """A visual line as the rules see it: text (bounded) with each region's character span."""

    index: int
    line: Line
    text: str
    spans: list[tuple[int, int]]  # per region of line.regions: (start, end) in text
    box: Box
    confidence: float

    def regions_in(self, start: int, end: int) -> list[int]:
        return [i for i, (s, e) in enumerate(self.spans) if s < end and start < e and s < e]

    def regions(self) -> list[Region]:
        """The line's regions whose text the row holds (noise left out)."""
        return [r for r, (s, e) in zip(self.line.regions, self.spans) if s < e]


#: a region read below this confidence, with at most three characters and no digit, beside other
#: text on its line is a mark misread as letters (a logo's edge: "lu" before the vendor's name).
NOISE_CONFIDENCE = 0.5


def _noise(region: Region, line: Line) -> bool:
    return (region.confidence < NOISE_CONFIDENCE and len(region.text.strip()) <= 3
            and not re.search(r"\d", region.text) and len(line.regions) > 1)


def _rows(page: Page) -> list[_Row]:
    """The page's visual lines (at most :data:`MAX_LINES`) as rows: their regions' text (at most
    :data:`MAX_LINE_CHARS`) joined by a space, noise beside other text (:data:`NOISE_CONFIDENCE`)
    left out, the confidence their characters' mean (a short unsure region weighs little); lines
    without text are skipped."""
    rows = []
    for index, line in enumerate(page.lines[:MAX_LINES]):
        text, spans, kept = "", [], []
        for region in line.regions:
            part = region.text[: max(MAX_LINE_CHARS - len(text), 0)] if region.text and not _noise(region, line) else ""
            if text and part:
                text += " "
            spans.append((len(text), len(text) + len(part)))
            text += part
            if part:
                kept.append(region)
        if not text.strip():
            continue
        conf = sum(r.confidence * len(r.text) for r in kept) / max(sum(len(r.text) for r in kept), 1)
        rows.append(_Row(index, line, text, spans, line.box, conf))
    return rows


@dataclass(frozen=True)
class _Token:
    """A token found on a row: its text, value and character span."""

    row: _Row
    start: int
    end: int
    text: str
    value: Any
    currency: str | None = None


def _source(token: _Token) -> tuple[tuple[str, ...], tuple[Box, ...], float]:
    """Region ids, boxes (the word box when the token is one whole word) and mean confidence."""
    idx = token.row.regions_in(token.start, token.end) or list(range(len(token.row.line.regions)))
    regions = [token.row.line.regions[i] for i in idx]
    boxes: list[Box] = []
    for region in regions:
        word = next((w for w in region.words if w.text.strip() and w.text.strip() in token.text
                     and token.text.strip().startswith(w.text.strip()[:1])), None)
        boxes.append(word.box if word is not None and len(regions) == 1 and
                     word.text.strip() == token.text.strip() else region.box)
    conf = sum(r.confidence for r in regions) / len(regions)
    return tuple(r.region_id for r in regions), tuple(boxes), conf


def _field(name: str, token: _Token, certainty: float, page_index: int, value: Any = None,
           currency: str | None = None) -> ReceiptField:
    ids, boxes, conf = _source(token)
    return ReceiptField(name, token.text, token.value if value is None else value,
                        max(0.0, min(1.0, conf * certainty)), page_index, ids, boxes, currency)


def _rows_field(name: str, rows: Sequence[_Row], text: str, certainty: float, page_index: int) -> ReceiptField:
    regions = [r for row in rows for r in row.regions()]
    conf = sum(r.confidence for r in regions) / max(len(regions), 1)
    return ReceiptField(name, text, text, max(0.0, min(1.0, conf * certainty)), page_index,
                        tuple(r.region_id for r in regions), tuple(r.box for r in regions))


#: digits misread as letters right after a currency code ("RMI11.90", "RMO.00").
_CURRENCY_DIGITS = re.compile(r"(?<=RM)[0-9OIl]{1,7}(?=\.\d{2}(?!\d))")
_DIGIT_OF = str.maketrans("OIl", "011")
#: an amount the recogniser split at its decimal point ("102. 40") at the end of a row.
_SPLIT_AMOUNT = re.compile(r"(?<![\w.,/:-])(?P<num>\d{1,7})\. (?P<dec>\d{2})\s*$")


#: an amount after a currency code whose decimal point was read as a hyphen ("TOTAL RM 14-10"): a
#: price is not a range or a date.
_HYPHEN_POINT = re.compile(r"(?<=RM)(\s?\d{1,7})-(?=\d{2}(?![\d.,/:-]))")


def _amount_text(text: str) -> str:
    """``text`` with a currency code's misread digits read as digits and a decimal point read as a
    hyphen after it read as a point (same length, so character spans stay valid)."""
    return _HYPHEN_POINT.sub(r"\1.", _CURRENCY_DIGITS.sub(lambda m: m[0].translate(_DIGIT_OF), text))


def _amounts(rows: Sequence[_Row]) -> list[_Token]:
    """Every two-decimal amount of the rows, in reading order (at most :data:`MAX_CANDIDATES`);
    a token's text is as printed: digits misread after a currency code read as digits, a space
    the recogniser put after the decimal point of a row's last amount dropped."""
    out: list[_Token] = []
    for row in rows:
        text = _amount_text(row.text)
        found = False
        for m in _AMOUNT.finditer(text):
            found = True
            try:
                value = Decimal(m["num"].replace(",", ""))
            except InvalidOperation:  # pragma: no cover - the pattern only matches numbers
                continue
            # a currency printed apart ("RM 8.60") is a word of its own, not part of the amount's text
            start = m.start("cur") if m["cur"] and not text[m.end("cur"):m.start("num")] else m.start("num")
            out.append(_Token(row, start, m.end(), text[start:m.end()], value, m["cur"]))
            if len(out) >= MAX_CANDIDATES:
                return out
        split = None if found else _SPLIT_AMOUNT.search(text)
        if split is not None:
            out.append(_Token(row, split.start(), split.end(), f"{split['num']}.{split['dec']}",
                              Decimal(f"{split['num']}.{split['dec']}")))
            if len(out) >= MAX_CANDIDATES:
                return out
    return out


# ----------------------------------------------------------------------------- the rules

def _label(row: _Row, token: _Token) -> str:
    """The row's text left of the token (where its label is printed)."""
    return row.text[: token.start]


def _same_row_amounts(rows: Sequence[_Row], amounts: Sequence[_Token], row: _Row) -> list[_Token]:
    """Amounts on ``row``, else right of it on an adjacent row whose vertical span overlaps
    its own by half the smaller height (a label and its value split into two visual lines)."""
    own = [a for a in amounts if a.row is row]
    if own:
        return own
    x0, y0, x1, y1 = row.box
    below = [a for a in amounts if a.row.index == row.index + 1 and not _has_label(a.row)
             and 0 <= a.row.box[1] - y1 <= 0.5 * (y1 - y0)]  # the value printed right under its label
    if below:
        return below
    out = []
    for a in amounts:
        bx0, by0, bx1, by1 = a.row.box
        if a.row is row or abs(a.row.index - row.index) > 2:
            continue
        overlap = min(y1, by1) - max(y0, by0)
        if overlap >= 0.45 * min(y1 - y0, by1 - by0) and bx0 >= x1 - 0.1 * (x1 - x0) and not _has_label(a.row):
            out.append(a)
    return out


def _has_label(row: _Row) -> bool:
    return bool(re.search(r"[A-Za-z]{3}", row.text))


@dataclass
class _Amounts:
    """Labelled amounts of a page: (token, label strength) per kind."""

    total: list[tuple[_Token, float]] = field(default_factory=list)
    subtotal: list[_Token] = field(default_factory=list)
    tax: list[_Token] = field(default_factory=list)
    rounding: list[_Token] = field(default_factory=list)
    cash: list[_Token] = field(default_factory=list)
    change: list[_Token] = field(default_factory=list)
    summary_total: list[_Token] = field(default_factory=list)  # totals printed in a tax summary


def _labelled(rows: Sequence[_Row], amounts: Sequence[_Token]) -> _Amounts:
    out = _Amounts()
    in_summary = False
    for row in rows:
        if _SUMMARY.search(row.text):
            in_summary = True
        row_amounts = _same_row_amounts(rows, amounts, row)
        if not row_amounts:
            continue
        label = _label(row, row_amounts[0]) if row_amounts[0].row is row else row.text
        last = row_amounts[-1]
        if _SUBTOTAL.search(label):
            out.subtotal.append(last)
        elif _TOTAL.search(label) and not _NOT_TOTAL.search(label) and in_summary:
            out.summary_total.append(last)
        elif _TOTAL.search(label) and not _NOT_TOTAL.search(label):
            strength = 1.0 if _TOTAL_STRONG.search(label) else 0.8
            strength += 0.1 if _ROUNDING.search(label) else 0.0
            out.total.append((last, strength))
        elif _ROUNDING.search(label):
            out.rounding.append(last)
        elif _TAX.search(label) and not _NOT_TAX.search(label) and not in_summary:
            out.tax.append(last)
        elif _CHANGE.search(label):
            out.change.append(last)
        elif _CASH.search(label) and not re.search(r"excl", label, re.I):
            out.cash.append(last)
    return out


def _among(token: _Token, tokens: Sequence[_Token]) -> bool:
    return any(token is t for t in tokens)


def _paid(found: _Amounts) -> set[Decimal]:
    """What the customer paid: cash - change for the last two of each (change below cash), or
    the cash amount itself when the page prints no change line."""
    if not found.change:
        return {c.value for c in found.cash[-2:] if c.value > 0}
    return {c.value - ch.value for c in found.cash[-2:] for ch in found.change[-2:] if c.value > ch.value}


def _sums(found: _Amounts) -> set[Decimal]:
    """Subtotal (+ tax) (+ rounding) for the last two subtotals and taxes and the last rounding."""
    out: set[Decimal] = set()
    for sub in found.subtotal[-2:]:
        for tax in [None, *found.tax[-2:]]:
            for rnd in [None, *found.rounding[-1:]]:
                out.add(sub.value + (tax.value if tax else 0) + (rnd.value if rnd else 0))
    return out


def _pick_total(found: _Amounts, amounts: Sequence[_Token]) -> tuple[_Token, float] | None:
    """The total: best label, then agreement with subtotal + tax (+ rounding), the amount paid
    (:func:`_paid`) or another total + rounding (the rounded one), then the larger amount, then
    the later one. When no labelled total agrees with anything but the amount paid is confirmed
    by another line (subtotal + tax, a total in the tax summary), the amount paid wins (a total
    misread, or printed before a discount). Without a labelled total: the amount paid, low
    confidence (an unlabelled amount equal to it, else the cash amount itself)."""
    totals = [(t, s) for t, s in found.total if t.value > 0]
    paid = _paid(found)
    sums = _sums(found)
    confirmed = {v for v in paid if v in sums or any(t.value == v for t in found.summary_total)}
    if not totals:
        others = [a for a in amounts if a.value in paid and not _among(a, found.cash + found.change)]
        unlabelled = [a for a in others if not _among(a, found.subtotal)] or others
        if unlabelled:
            return unlabelled[-1], 0.4
        # cash handed over may exceed the total: it is the total when subtotal + tax confirm it or
        # its label says it was paid ("PAID BY", "AMT PAID")
        cash = [c for c in found.cash if c.value in paid and (c.value in sums or re.search(r"\bpaid\b", c.row.text, re.I))]
        return (cash[-1], 0.4) if cash else None
    rounded = {t.value + r.value for t, _ in totals for r in found.rounding if r.value != 0}
    checks = paid | sums
    best, best_key = None, None
    for order, (token, strength) in enumerate(totals):
        agrees = token.value in checks or token.value in rounded
        key = (strength + (0.3 if agrees else 0.0) + (0.3 if token.value in rounded else 0.0), token.value, order)
        if best_key is None or key > best_key:
            best, best_key = (token, min(1.0, 0.7 * strength + (0.3 if agrees else 0.15))), key
    if best is not None and confirmed and not any(t.value in checks or t.value in rounded for t, _ in totals):
        value = max(confirmed)
        source = [t for t in [*found.summary_total, *found.subtotal, *found.cash] if t.value == value]
        return source[-1], 0.5
    return best


#: a date's separator doubled or with spaces around it ("26-05--2018", "24 -Mar-2018"): no receipt
#: prints one so (the 131 SROIE dev and kie keys: none), the recogniser reads one so now and then.
_DATE_SEPARATOR = re.compile(r"\s*([/.-])\1?\s*")
#: a month's O read as a zero ("0ct 3, 2016", "N0V").
_MONTH_ZERO = re.compile(r"(?<![A-Za-z\d])0(?=ct)|(?<=n)0(?=v)", re.I)


def _date_text(text: str) -> str:
    """A date token's text as printed: its separators single and without spaces around them
    (:data:`_DATE_SEPARATOR`), a month's O read as a zero read as O."""
    return _MONTH_ZERO.sub("O", _DATE_SEPARATOR.sub(r"\1", text))


def _pick_date(rows: Sequence[_Row]) -> tuple[_Token, float] | None:
    """The receipt's date: a DATE-labelled one first, else the first in reading order."""
    best, best_key, seen = None, None, 0
    for row in rows:
        for d, (s, e) in _dates(row.text, MAX_CANDIDATES):
            seen += 1
            if seen > MAX_CANDIDATES:
                return best
            labelled = bool(_DATE_LABEL.search(row.text[:s])) and not _NOT_DATE_LABEL.search(row.text[:s])
            unwanted = bool(_NOT_DATE_LABEL.search(row.text[:s]))
            key = (labelled, not unwanted, -row.index)
            if best_key is None or key > best_key:
                token = _Token(row, s, e, _date_text(row.text[s:e]), d.isoformat())
                best, best_key = (token, 0.95 if labelled else 0.8 if not unwanted else 0.5), key
    return best


#: a token of two characters mixing a digit and a small letter before a capital word at the start of
#: a line ("l8 SYARIKAT ..."): a handwritten or stamped mark read beside the name, as no name starts so.
_LEAD_MARK = re.compile(r"^\s*(?=[a-z]\d|\d[a-z])\w\w\s+(?=[A-Z]{2})")


def _is_skippable_top(row: _Row) -> bool:
    """A line at the top that is not (part of) a vendor name: a title, registration number,
    phone, date, amount, boilerplate, a misread logo (confidence below :data:`VENDOR_MIN_CONFIDENCE`), a
    line starting in lower case or without two letters in a row, more digits than letters, a
    run of five digits that is not a registration number after the name, or a line of labels
    (two colons) or more than :data:`VENDOR_MAX_WORDS` words (columns read as one line). A mark
    before the line's first capital word (:data:`_LEAD_MARK`) is not read."""
    text = _LEAD_MARK.sub("", row.text)
    letters = re.findall(r"[A-Za-z]", text)
    return (len(letters) < 3 or not re.search(r"[A-Za-z]{2}", text) or bool(_TITLE.search(text))
            or bool(_REG_NUMBER.search(text)) or bool(_PHONE.search(text)) or parse_date(text) is not None
            or parse_amount(text) is not None
            or len(re.findall(r"\d", text)) > len(letters) or bool(_BOILERPLATE.search(text))
            or (row.confidence < VENDOR_MIN_CONFIDENCE and not _STRICT_LEGAL.search(text))
            or text.lstrip()[:1].islower() or _is_address_line(text)
            or bool(re.search(r"\d{5,}", _vendor_text([row])))
            or len(text.split()) > VENDOR_MAX_WORDS or text.count(":") >= 2)


#: a line introducing the company that owns or runs the shop: the line after it is not the vendor's name.
_OWNER = re.compile(r"\b(?:owned|operated|managed|run)\s*by\W*$", re.I)


def _is_address_line(text: str) -> bool:
    """A line that reads as part of an address: a house or lot number first, a postcode before a
    place name, or a street word without a legal form."""
    return bool(_ADDRESS_LIKE.search(text)) or bool(_STREET.search(text) and not _LEGAL_FORM.search(text))


def _joinable(row: _Row) -> bool:
    """A line that may be part of a vendor name printed on several lines."""
    return not _is_skippable_top(row) and not re.search(r"[@#]|\d{4,}", row.text)


def _vendor(rows: Sequence[_Row]) -> tuple[list[_Row], int] | None:
    """The vendor's rows and the index (in ``rows``) of the first row after them: the first
    candidate line at the top, or the line holding a legal form among the next ones (a brand
    line above it is not part of the name, unless the legal-form line reads as the end of a name
    begun above: "RESTAURANT SDN BHD", "CO. (M) SDN BHD", "ALAM) SDN BHD", or the line above ends
    with "&" or "-"); a name cut at "&", "-" or "," or an open parenthesis goes on, and a line
    holding only a legal form joins; at most three lines."""
    n = min(len(rows), VENDOR_SEARCH_LINES)
    address = next((i for i in range(n) if _is_address_line(rows[i].text)), n)
    # below an address line, only a line with a legal form is the vendor (the name is a logo otherwise)
    top = [i for i in range(n) if not _is_skippable_top(rows[i]) and (i < address or _STRICT_LEGAL.search(rows[i].text))
           and not (i and _OWNER.search(rows[i - 1].text))]
    if not top:
        return None
    first = top[0]
    legal = next((i for i in top[:5] if _LEGAL_FORM.search(rows[i].text)
                  and (i - first <= 4 or _STRICT_LEGAL.search(rows[i].text))), None)
    if legal is None:  # "COFFEE CO. THE GARDENS MALL": "Co." only when no other legal form is printed
        legal = next((i for i in top[:5] if _COMPANY_ABBREVIATION.search(rows[i].text)), None)
    start = end = first
    if legal is not None:
        start = end = legal
        if start - 1 >= first and start - 1 in top and _joinable(rows[start - 1]) and (
                _CONTINUATION.match(rows[legal].text) or _LEGAL_ONLY.match(rows[legal].text)
                or rows[start - 1].text.rstrip().endswith(("&", "-"))):
            start -= 1  # "LIAN CHI PU TIAN VEGETARIAN" / "RESTAURANT SDN BHD": one name on two lines
    while end + 1 < len(rows) and end - start < 2:
        text, prev = rows[end + 1].text, " ".join(r.text for r in rows[start:end + 1])
        cut = prev.rstrip().endswith(("&", "-", ",")) or prev.count("(") > prev.count(")")
        strict = any(_STRICT_LEGAL.search(r.text) for r in rows[start:end + 1])
        if _LEGAL_ONLY.match(text) or (cut and _joinable(rows[end + 1])) or (
                not strict and _STRICT_LEGAL.search(text) and _joinable(rows[end + 1])):
            end += 1
        else:
            break
    return list(rows[start:end + 1]), end + 1


_AFTER_REG = re.compile(r"\s*[\(\[]\s*(?:co(?:mpany)?\.?\s*(?:reg\.?\s*)?no\.?\s*:?\s*)?\d{4,}[\s-]*[A-Z]?\s*[\)\]].*$",
                        re.I)
_TRAILING_REG = re.compile(
    r"(?:\s*[\(\[]\s*(?:co(?:mpany)?\.?\s*(?:reg\.?\s*)?no\.?\s*:?\s*)?[A-Z]?\d{3,}[\s-]*[A-Z]?\s*[\)\]]?"
    r"|\s+C?\d{4,}[\s-]*[A-Z]\b\)?|\s+[A-Z]?\))(?:\s*\([A-Z]{2,4}\))?\s*$", re.I)
_LEGAL_MISREAD = ((re.compile(r"\bS[O0I1]N(\.?\s*)BHD\b", re.I), r"SDN\1BHD"),
                  (re.compile(r"\bSDN(\.?\s*)(?!BHD\b)(?:[B8D][HI1]D|BH0|8HD)\b", re.I), r"SDN\1BHD"),
                  (re.compile(r"\b5/B\b"), "S/B"))
#: a digit misread for a letter inside a word of letters and dots ("D.1.Y.", "G0LD").
_NAME_DIGIT = re.compile(r"(?<=[A-Za-z]\.)[10](?=\.[A-Za-z])|(?<=[A-Za-z]{2})[10](?=[A-Za-z])|(?<=[A-Za-z])[10](?=[A-Za-z]{2})")


def _spaced_parentheses(text: str) -> str:
    """``text`` with runs of whitespace collapsed, a space outside parentheses set next to a
    word ("ALAM)SDN" -> "ALAM) SDN"), as printed names and addresses set them (typographic
    convention; every SROIE dev and kie key follows it), and a capital I between a capital and a
    small letter read as the small l it looks like ("JIn" -> "Jln", "BIk" -> "Blk")."""
    text = re.sub(r"(?<=\b[A-Z])I(?=[a-z])", "l", text)
    return " ".join(re.sub(r"\)(?=\w)", ") ", re.sub(r"(?<=\w)\(", " (", text)).split())


def _vendor_text(rows: Sequence[_Row], char_probs: CharProbs | None = None) -> str:
    """The vendor's lines joined by a space (``char_probs`` given: without the spaces that split a
    word, :func:`_split_word`): a registration number after the name
    ("(139386 X)", "(Co. No:20154-T)", its parenthesis read as C: "C8199K)") and what follows it, a
    leading "#000002" or stray marks (". KMF") dropped, a legal
    form misread in one letter ("SON BHD", "SDN DID", "5/B") and a digit misread inside a word
    ("D.1.Y.") read as printed, an underscore read as a space, letters glued after a legal form's
    period dropped (:data:`_AFTER_LEGAL_FORM`)."""
    lines = [_joined_words(r, char_probs) if char_probs else r.text for r in rows]
    text = " ".join([_CUT_PERIOD.sub(r"\1", line) for line in lines[:-1]] + lines[-1:])
    text = re.sub(r"^[^\w(]*#\d+\s*|^[^\w(]+", "", _LEAD_MARK.sub("", text))
    text = _AFTER_REG.sub("", text)
    for _ in range(2):
        text = _TRAILING_REG.sub("", text)
    for pattern, fixed in _LEGAL_MISREAD:
        text = pattern.sub(fixed, text)
    text = _NAME_DIGIT.sub(lambda m: "I" if m[0] == "1" else "O", text.replace("_", " "))
    return _spaced_parentheses(_SB_PERIOD.sub("", _branch_dropped(_AFTER_LEGAL_FORM.sub("", text))))


#: a period ending a vendor line after a word of four letters or more, the name going on on the next
#: line ("AIK HUAT HARDWARE." / "ENTERPRISE (SETIA" / "ALAM) SDN BHD"): a speck, as no name puts a
#: period after a whole word before its next one (none of the 131 SROIE dev and kie company keys;
#: their periods close abbreviations of three letters or fewer: "CO.", "SDN. BHD.", "D.I.Y.").
_CUT_PERIOD = re.compile(r"(?<![A-Za-z.])(?!(?:corp|bros|intl)\.)([A-Za-z]{4,})\.\s*$", re.I)
#: a period after "S/B" (Sendirian Berhad) ending a name: a speck, as the slash already marks the
#: abbreviation (the 6 SROIE dev and kie company keys that end with S/B: none with a period).
_SB_PERIOD = re.compile(r"(?<=\bS/B)\.(?=\s*$)", re.I)
#: a legal form that ends a company's name (its word boundary after, unlike :data:`_STRICT_LEGAL`).
_NAME_END = re.compile(r"\b(?:s[do0]n\.?\s*bhd|bhd|berhad|s/b|plt|ltd|limited|inc|llc|llp|gmbh)\b\.?"
                       r"|\bco\.(?=\s|$)", re.I)
#: words after a name's last legal form: the branch or mall printed on the name's line
#: ("EIGHT OUNCE COFFEE CO. THE GARDENS MALL").
_BRANCH = re.compile(r"\s+[A-Za-z][\w&'\s-]*$")


def _branch_dropped(text: str) -> str:
    """``text`` (a vendor name) without the words after its last legal form (:data:`_BRANCH`): a
    company's name ends with its legal form (all 83 SROIE dev and kie company keys that hold one)."""
    found = list(_NAME_END.finditer(text))
    if not found:
        return text
    last = found[-1]
    return text[:last.end()] + _BRANCH.sub("", text[last.end():])


#: letters glued to the period of a legal form that ends the name ("SDN. BHD.LLT"): specks, as a
#: name goes on after its legal form only after a space.
_AFTER_LEGAL_FORM = re.compile(r"(?<=\b(?:BHD|LTD|S/B|PLT)\.)[A-Za-z]{1,4}$", re.I)


#: a company registration number printed at the end of an address line (two columns read as one).
_REG_TAIL = re.compile(r"\s*\b(?:co(?:mpany)?|br|roc)[\s.]*(?:reg(?:istration)?|no)\b.*$", re.I)
_ITEM_WORDS = re.compile(r"\b(?:qty|quantity|price|amount|amt|description|desc|item|items)\b", re.I)
#: a colon inside an address ("LOT NO.: 4F-27") after these words; any other colon is a label.
_ADDRESS_COLON = re.compile(r"\b(?:lot|no|unit|blk|block|level|suite)\W*$", re.I)


#: "Jln" (Jalan, street) with its l read as i or 1 ("Jin Puteri"): the SROIE dev and kie address keys
#: print JLN 11 times and JIN once (a key copying the misprint).
_JALAN = re.compile(r"\b(J)[iI1|]([nN])\b(?=\.?\s+\w)")
#: a dotted abbreviation of single letters without its closing period ("SELANGOR D.E"): the
#: recogniser missed it, as every such abbreviation of the SROIE dev and kie address keys closes with
#: one (D.E. 3 times, P.T. once).
_OPEN_ABBREVIATION = re.compile(r"(?<![\w.'])(?:[A-Za-z]\.)+[A-Za-z](?=\s|$)")
#: a five-character postcode with one digit misread as a letter ("4D170") before the town's name.
_POSTCODE_MISREAD = re.compile(r"\b(?=[\dODIl]{5}\s+[A-Za-z])(?=(?:[ODIl]*\d){4}[ODIl]*\s)(?=\d*[ODIl])[\dODIl]{5}\b")
_POSTCODE_DIGIT = str.maketrans("ODIl", "0011")


#: a quote mark opening a word that no quote mark closes on its line: a speck read as a mark
#: ("Shah Alam, 'Selangor."); an address quotes no word, and its apostrophes are inside words (D'sara).
_LONE_QUOTE = re.compile(r"(?<!\S)['\"`](?=[A-Za-z])(?!.*['\"`])")


def _label_colon(text: str) -> bool:
    """Whether ``text`` holds a colon that is a label's ("Tel:", "GST ID :"), not an address's."""
    return any(not _ADDRESS_COLON.search(text[:m.start()]) for m in re.finditer(":", text))


#: a space the recogniser read with a probability below this, next to punctuation, is not printed
#: ("NO.50 , JALAN" -> "NO.50, JALAN"). 0.5 separates the spaces the recogniser inserted from those
#: it emitted: an inserted space (:func:`ocrstream.ocr.recognition.ppocr.ctc_greedy`) peaks in a gap
#: where blank won the arg-max, so its p(space) <= p(blank) and it is at most 0.5; an emitted one won
#: the arg-max and is almost always above. Dev and sroie-kie addresses: below 0.3, 9 spaces the keys
#: do not have and 1 they have ("ALAM, SEL." 0.10); 0.3 to 0.5 adds 2 the keys do not have ("TSJ2,
#: TMN" 0.32, "107, JALAN" 0.46) and none they have.
UNSURE_SPACE = 0.5
#: a period the recogniser read with a probability below this, in an address between a word or
#: number and a word that starts with a letter (on the line or the next address line), is the comma
#: it looks like ("NO.32 & 33. JALAN" -> "33, JALAN"): the comma is an address's separator, '.' and
#: ',' differ by a few pixels. Dev and sroie-kie addresses: 7 periods changed, all to the keys'
#: commas; a period before a number ("Jelutong. 40150 Shah Alam", 0.51) is kept, as the keys print it.
UNSURE_PERIOD = 0.65

#: a space the recogniser inserted with a probability below this between two letters splits a word
#: ("SHAH AL AM", "GAR DENIA", "(K L)", "cof fee"). On the 60 SROIE dev pages (all lines against
#: the page text): below 0.3, 13 such spaces split a word and 2 separate words ("TAX INVOICE" 0.11);
#: 0.3 to 0.5, 3 and 3.
UNSURE_WORD_SPACE = 0.3
#: an unsure space between letters with a piece of at most this many letters on one side splits a
#: word; between two longer pieces that are words it separates them ("MINI MARKET"). The 7 such
#: spaces of the SROIE dev and kie vendor names and addresses: the 6 the keys do not print all have
#: a short piece ("GAR DENIA", "AL AM", "(K L)", "cof fee"), the one they print is "MINI MARKET";
#: on the 60 dev pages' text, the long-pieced splits are no words ("Descr iption", "adjus tments").
SPLIT_PIECE_LETTERS = 3
CharProbs = Mapping[str, Sequence[float]]

#: in an address that separates its parts with a comma (:data:`_ADDRESS_COMMA`), a period after a
#: number or a whole word of four letters or more, before a space and a word or number, is such a
#: comma read as the period it looks like ("NO.32 & 33. JALAN SR 1/9. SEKSYEN 9, ..." -> "33, JALAN",
#: "1/9, SEKSYEN"). The keys of the 131 SROIE dev and kie receipts print a comma there 338 times and a
#: period 12 times (8 of them one shop's "PANAS. SETAPAK"); an address without such a comma
#: ("DATARAN GLOMAC. KELANA JAYA 47301 PETALING JAYA. SELANGOR") prints periods and keeps them, and
#: abbreviations of three letters or fewer ("NO. 53", "KG. DUSUN", "SEK.") keep theirs.
_ADDRESS_PERIOD = re.compile(r"(?P<w>(?<![A-Za-z])\d[\dA-Za-z]*|(?<![\w.'])[A-Za-z]{4,})\.(?= [A-Za-z\d])")
_ADDRESS_COMMA = re.compile(r"(?:\d|[A-Za-z]{4}), ")


#: a period right before a comma ("JALAN KANCIL., OFF"): a speck, no address prints both (none of
#: the 131 SROIE dev and kie keys).
_PERIOD_COMMA = re.compile(r"\.(?=,)")


def _address_commas(text: str) -> str:
    """``text`` (an address's lines joined) with the periods of :data:`_ADDRESS_PERIOD` read as
    commas when it separates its parts with a comma elsewhere, and a period before a comma dropped."""
    text = _PERIOD_COMMA.sub("", text)
    return _ADDRESS_PERIOD.sub(r"\g<w>,", text) if _ADDRESS_COMMA.search(text) else text


def _row_chars(row: _Row, char_probs: CharProbs) -> list[tuple[str, float | None]]:
    """``row.text`` as (character, recogniser probability) pairs; None where the probability is
    unknown (the space joining regions, a region whose ``char_probs`` do not fit its text)."""
    out: list[tuple[str, float | None]] = []
    for k, (region, (s, e)) in enumerate(zip(row.line.regions, row.spans)):
        if k and s > len(out):
            out.append((" ", None))
        probs = char_probs.get(region.region_id)
        fits = probs is not None and len(probs) == len(region.text)
        out += [(c, probs[i] if fits and probs is not None else None) for i, c in enumerate(row.text[s:e])]
    return out


def _unsure(prob: float | None, below: float) -> bool:
    return prob is not None and prob < below


def _split_word(chars: Sequence[tuple[str, float | None]], k: int) -> bool:
    """Whether ``chars[k]`` is a space the recogniser was unsure of (:data:`UNSURE_WORD_SPACE`)
    between two letters that does not separate two words (:func:`_two_words`)."""
    c, prob = chars[k]
    if not (c == " " and _unsure(prob, UNSURE_WORD_SPACE) and 0 < k < len(chars) - 1
            and chars[k - 1][0].isalpha() and chars[k + 1][0].isalpha()):
        return False
    left = right = k
    while left > 0 and chars[left - 1][0].isalpha():
        left -= 1
    while right + 1 < len(chars) and chars[right + 1][0].isalpha():
        right += 1
    return not _two_words("".join(c for c, _ in chars[left:k]), "".join(c for c, _ in chars[k + 1:right + 1]))


def _two_words(left: str, right: str) -> bool:
    """Whether ``left`` and ``right`` (the letters either side of an unsure space) are two words:
    both of more than :data:`SPLIT_PIECE_LETTERS` letters and in the lexicon
    (:func:`ocrstream.ocr.postprocess.lexicon.known_words`: English and receipt words)."""
    if min(len(left), len(right)) <= SPLIT_PIECE_LETTERS:
        return False
    words = known_words()
    return left.lower() in words and right.lower() in words


def _joined_words(row: _Row, char_probs: CharProbs) -> str:
    """``row.text`` without the spaces that split a word (:func:`_split_word`)."""
    chars = _row_chars(row, char_probs)
    return "".join(c for k, (c, _) in enumerate(chars) if not _split_word(chars, k)).strip()


def _printed_text(row: _Row, char_probs: CharProbs) -> str:
    """``row.text`` as printed: spaces the recogniser was unsure of (:data:`UNSURE_SPACE`) next to
    punctuation dropped, and those splitting a word (:func:`_split_word`); periods it was unsure of
    (:data:`UNSURE_PERIOD`) after a word or number and before a word read as commas; characters
    without a probability kept as read; a speck read as a letter after the line's last word and
    its period (:func:`_end_speck`) dropped."""
    chars = _row_chars(row, char_probs)
    while chars and chars[-1][0] == " ":
        chars.pop()
    if _end_speck(chars):
        chars.pop()
    text = "".join(c for c, _ in chars)
    out = []
    for k, (c, prob) in enumerate(chars):
        before, after = text[k - 1: k], text[k + 1: k + 2]
        if c == " " and _unsure(prob, UNSURE_SPACE) and not (before.isalnum() and after.isalnum()):
            continue
        if _split_word(chars, k):
            continue
        if c == "." and _unsure(prob, UNSURE_PERIOD) and before.isalnum() and (
                (after == " " and text[k + 2: k + 3].isalpha()) or (after.isalpha() and text[k - 2: k - 1].isalnum())):
            c = ","
        out.append(c)
    return "".join(out).strip()


def _end_speck(chars: Sequence[tuple[str, float | None]]) -> bool:
    """Whether the last of ``chars`` (a line without trailing spaces) is a letter the recogniser
    was unsure of (:data:`UNSURE_SPACE`) glued after a word of two letters or more and its period
    or comma ("KUALA SELANGOR.U"): a speck. No SROIE dev or kie address key ends so (its dotted
    abbreviations, "D.E.", have one letter before the period)."""
    tail = "".join(c for c, _ in chars[-4:])
    return (len(tail) == 4 and tail[:2].isalpha() and tail[2] in ".," and tail[3].isalpha()
            and _unsure(chars[-1][1], UNSURE_SPACE))


def _address(rows: Sequence[_Row], start: int, char_probs: CharProbs | None = None) -> list[tuple[_Row, str]]:
    """Address lines from ``rows[start]`` with their text: registration lines before it skipped,
    a registration number printed after an address line dropped; up to the first stop line
    (phone, tax number, title, date, amount, item header, a label with a colon), at most
    :data:`MAX_ADDRESS_LINES`; [] when no line holds a digit."""
    out: list[tuple[_Row, str]] = []
    i = start
    while i < len(rows) and len(out) < MAX_ADDRESS_LINES:
        raw = _printed_text(rows[i], char_probs) if char_probs else rows[i].text
        text = _REG_TAIL.sub("", raw) if re.search(r"[A-Za-z]{3}", _REG_TAIL.sub("", raw)) else raw
        text = _LONE_QUOTE.sub("", text)
        stop = (_PHONE.search(text) or _ADDRESS_STOP.search(text) or _TITLE.search(text)
                or parse_date(text) is not None or parse_amount(text) is not None
                or _ITEM_WORDS.search(text) or (out and _label_colon(text)))
        if not out and i - start < 3 and (_REG_NUMBER.search(text) or _PHONE.search(text) or _NOT_ADDRESS.search(text)
                                          or re.fullmatch(r"\s*\(.*\)\s*", text) or parse_date(text)):
            i += 1
            continue
        if stop:
            break
        if not re.search(r"[A-Za-z]{2}", text):
            if out:
                break
            i += 1
            continue
        out.append((rows[i], text.strip()))
        i += 1
    if char_probs:
        out = [(row, _unsure_end(row, text, char_probs) if k + 1 < len(out) and out[k + 1][1][:1].isalpha() else text)
               for k, (row, text) in enumerate(out)]
    return out if any(re.search(r"\d", t) for _, t in out) else []


def _unsure_end(row: _Row, text: str, char_probs: CharProbs) -> str:
    """``text`` (an address line followed by one starting with a letter) with its last character,
    a period the recogniser was unsure of (:data:`UNSURE_PERIOD`) after a word or number, read as
    a comma (as :func:`_printed_text` reads one inside a line)."""
    chars = _row_chars(row, char_probs)
    while chars and chars[-1][0] == " ":
        chars.pop()
    if (text.endswith(".") and text[-2:-1].isalnum() and chars and chars[-1][0] == "."
            and _unsure(chars[-1][1], UNSURE_PERIOD)):
        return text[:-1] + ","
    return text


def _currency(rows: Sequence[_Row], total: _Token | None) -> _Token | None:
    """An explicit currency: on the total's token, else the first code/symbol on an amount row
    or a header row (``AMOUNT (RM)``)."""
    if total is not None and total.currency and total.currency in _CURRENCY_CODES:
        return _Token(total.row, total.start, total.start + len(total.currency), total.currency,
                      _CURRENCY_CODES[total.currency])
    ordered = ([total.row] if total is not None else []) + list(rows)
    for row in ordered:
        m = _CURRENCY_WORD.search(row.text)
        if m:
            code = m.group(1) or m.group(2)
            if code.upper() in _CURRENCY_CODES or code in _CURRENCY_CODES:
                return _Token(row, m.start(), m.end(), code, _CURRENCY_CODES.get(code.upper(), _CURRENCY_CODES.get(code)))
    return None


_QTY_PRICE = re.compile(r"(?P<q>\d+(?:\.\d+)?)\s*[xX*@]\s*(?:RM\s?)?(?P<p>\d+\.\d{2,3})")
_ITEM_HEADER = re.compile(r"\b(?:item|description|desc|qty|quantity|price|u/?p|product)\b", re.I)


def _line_items(rows: Sequence[_Row], amounts: Sequence[_Token], end_row: int) -> list[dict[str, Any]]:
    """Rows above ``end_row`` (the subtotal or total row) ending in an amount, after the item
    header when there is one: description, quantity, unit price, amount."""
    header = next((r.index for r in rows if r.index < end_row and _ITEM_HEADER.search(r.text)
                   and parse_amount(r.text) is None), None)
    if header is None:
        return []
    items: list[dict[str, Any]] = []
    pending: list[_Row] = []
    by_row: dict[int, list[_Token]] = {}
    for a in amounts:
        by_row.setdefault(a.row.index, []).append(a)
    for row in rows:
        if row.index <= header or row.index >= end_row:
            continue
        own = by_row.get(row.index)
        if not own:
            if re.search(r"[A-Za-z]{2}", row.text):
                pending = [row]
            continue
        last = own[-1]
        head = row.text[: own[0].start]
        description = re.sub(r"^[\W\d]*(?=[A-Za-z])", "", re.sub(r"\s+\d+(?:\.\d+)?\s*[xX*@]\s*$", "", head)).strip()
        qp = _QTY_PRICE.search(row.text)
        quantity = Decimal(qp["q"]) if qp else None
        unit = Decimal(qp["p"]) if qp else (own[-2].value if len(own) >= 2 else None)
        source = [row]
        if not re.search(r"[A-Za-z]{2}", description) and pending:
            description, source = pending[0].text, [pending[0], row]
        if not re.search(r"[A-Za-z]{2}", description):
            continue
        items.append({"description": description, "quantity": quantity, "unit_price": unit, "amount": last.value,
                      "region_ids": [r.region_id for s in source for r in s.line.regions]})
        pending = []
        if len(items) >= MAX_ITEMS:
            break
    return items


def _is_receipt(rows: Sequence[_Row], amounts: Sequence[_Token], found: _Amounts) -> bool:
    return bool(amounts) and (bool(found.total) or sum(bool(_RECEIPT_WORDS.search(r.text)) for r in rows) >= 2)


def extract_page(page: Page, char_probs: CharProbs | None = None) -> dict[str, ReceiptField]:
    """The receipt fields of one page (rules: the module docstring); ``{}`` when the page does
    not read as a receipt. ``char_probs``: the recogniser's probabilities per character of a
    region's text, by region id (optional: spaces it was unsure of are dropped from the address)."""
    rows = _rows(page)
    amounts = _amounts(rows)
    found = _labelled(rows, amounts)
    if not _is_receipt(rows, amounts, found):
        return {}
    p = page.page_index
    out: dict[str, ReceiptField] = {}
    vendor = _vendor(rows)
    address: list[tuple[_Row, str]] = []
    head = min(len(rows), VENDOR_SEARCH_LINES)
    if vendor is not None:
        chosen, after = vendor
        name = _vendor_text(chosen, char_probs)
        if name:
            out["vendor_name"] = _rows_field("vendor_name", chosen, name, 0.8, p)
        address = _address(rows, after, char_probs)
        head = rows.index(chosen[0])  # else an address printed above the vendor's name
    if not address:
        first = next((i for i, r in enumerate(rows[:head]) if _is_address_line(r.text)), None)
        address = _address(rows, first, char_probs) if first is not None else []
    if address:
        text = _POSTCODE_MISREAD.sub(lambda m: m[0].translate(_POSTCODE_DIGIT), " ".join(t for _, t in address))
        text = _JALAN.sub(lambda m: m[1] + ("l" if m[2] == "n" else "L") + m[2], _address_commas(text))
        text = _OPEN_ABBREVIATION.sub(r"\g<0>.", text)
        out["vendor_address"] = _rows_field("vendor_address", [r for r, _ in address], _spaced_parentheses(text),
                                            0.7, p)
    picked_date = _pick_date(rows)
    if picked_date is not None:
        out["date"] = _field("date", *picked_date, p)
    total = _pick_total(found, amounts)
    currency = _currency(rows, total[0] if total else None)
    code = currency.value if currency else None
    if total is not None:
        out["total"] = _field("total", *total, p, currency=code)
    if found.subtotal:
        out["subtotal"] = _field("subtotal", found.subtotal[-1], 0.8, p, currency=code)
    if found.tax:
        out["tax"] = _field("tax", found.tax[-1], 0.7, p, currency=code)
    if currency is not None:
        out["currency"] = _field("currency", currency, 0.9, p)
    end = min([t.row.index for t in found.subtotal] + [t.row.index for t, _ in found.total], default=None)
    if end is not None:
        items = _line_items(rows, amounts, end)
        if items:
            item_rows = [r for r in rows if any(reg.region_id in set(i["region_ids"]) for i in items
                                                for reg in r.line.regions)]
            text = "\n".join(r.text for r in item_rows)
            fld = _rows_field("line_items", item_rows, text, 0.6, p)
            out["line_items"] = ReceiptField("line_items", text, items, fld.confidence, p, fld.region_ids, fld.boxes,
                                             code)
    return out


def extract_fields(document: Document, pages: Iterable[Page] | None = None,
                   char_probs: CharProbs | None = None) -> dict[str, ReceiptField]:
    """The receipt fields of ``document`` (rules and bounds: the module docstring).

    Args:
        document: a built Document (post-processed text, boxes in page pixels).
        pages: the pages to read (default: the document's, at most :data:`MAX_PAGES`).
        char_probs: optional ``{region_id: [probability per character of the region's text]}``
            (the recogniser's; a region whose list does not fit its text is read as it is).

    Returns:
        ``{name: ReceiptField}`` for the fields found (names in :data:`FIELD_NAMES`): those of
        the page with the most fields (a total counts double; the first page wins a tie); ``{}``
        when no page reads as a receipt. Never raises on any text.
    """
    best: dict[str, ReceiptField] = {}
    for page in list(pages if pages is not None else document.pages)[:MAX_PAGES]:
        found = extract_page(page, char_probs)
        if len(found) + ("total" in found) > len(best) + ("total" in best):
            best = found
    return best


def preload() -> None:
    """Load what the extractor reads lazily (the word list of :func:`_two_words`) now, once per
    process, instead of on the first receipt that asks: a long-running stage's memory then steps
    up before it serves, not hours later (issue 24's soak: store +8.5 MiB at ~2,000 documents).

    Raises:
        FileNotFoundError: the symspellpy wheel lacks its English word list.
    """
    known_words()


def document_fields(document: Document, regions: Iterable[Mapping[str, Any]] = (), *,
                    receipts: bool = True, char_probs: CharProbs | None = None) -> dict[str, dict[str, Any]]:
    """A document's ``fields`` as the results event carries them (one rule for
    :class:`~ocrstream.ocr.predictor.OCRPipeline` and the store stage).

    Args:
        document: the built Document.
        regions: its post-processed region dicts (``field`` spec, ``text``, ``value``, ``valid``,
            optional ``char_probs``).
        receipts: look for receipt fields when no region holds a template field.
        char_probs: ``{region_id: probabilities per character}`` for :func:`extract_fields`
            (default: the ``char_probs`` of ``regions``).

    Returns:
        Template fields ``{name: {"value", "text", "valid"}}`` when a region holds one; else,
        when ``receipts``, the receipt fields (:func:`fields_json` of :func:`extract_fields`);
        else ``{}``.
    """
    regions = list(regions)
    template = {r["field"]["name"]: {"value": r.get("value"), "text": r.get("text"), "valid": r.get("valid")}
                for r in regions if r.get("field")}
    if template or any(region.field for page in document.pages for line in page.lines for region in line.regions):
        return template
    if char_probs is None:
        char_probs = {r["region_id"]: r["char_probs"] for r in regions if r.get("char_probs") and r.get("region_id")}
    return fields_json(extract_fields(document, char_probs=char_probs)) if receipts else {}

"""Render the demo's sample documents into ``samples/`` (our own images, no third-party data).

    python -m tools.render_samples            # rewrites samples/*.png|jpg

Also used by the tests to make documents with known text. Text is drawn with Pillow's bundled
scalable font (``ImageFont.load_default(size)``, Pillow >= 10.1 with FreeType).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

RECEIPT = [
    "CORNER GROCER SDN BHD",
    "NO 12 JALAN MERANTI 47301 PETALING JAYA",
    "TAX INVOICE",
    "INVOICE NO: CS 104522",
    "DATE: 21/11/2026 14:03",
    "MILK 1L            2 X 6.90     13.80",
    "WHOLEMEAL BREAD    1 X 4.50      4.50",
    "EGGS GRADE A 10    1 X 7.20      7.20",
    "TOTAL INCL. GST                 25.50",
    "CASH                            50.00",
    "CHANGE                          24.50",
    "THANK YOU PLEASE COME AGAIN",
]

#: The lab report is a fixed-layout form: title, then (label, value) rows; its template is
#: ocrstream/ocr/templates/lab-report.yaml (boxes from FORM_GEOMETRY below).
LAB_TITLE = "City Hospital Laboratory"
LAB_FIELDS = [
    ("Patient ID", "88231-X"),
    ("Sample date", "20/11/2026"),
    ("Sample time", "08:15"),
    ("Haemoglobin", "13.9 g/dL"),
    ("White cells", "6.2"),
    ("Platelets", "251"),
    ("Glucose", "5.1 mmol/L"),
]
#: page size, font size, margin, row pitch, x of the value column (pixels)
FORM_GEOMETRY = {"width": 900, "height": 560, "size": 30, "margin": 40, "pitch": 60, "value_x": 420}

LETTER = [
    "Dear customer,",
    "your parcel 4471-2209 left our depot",
    "on Friday and arrives within 3 days.",
    "Questions? Call 03-7781 2200.",
    "Kind regards, the delivery team",
]


def render_page(lines: list[str], *, size: int = 28, width: int | None = None, margin: int = 40,
                line_gap: float = 1.6, rotate_deg: float = 0.0, noise: float = 0.0,
                seed: int = 0) -> Image.Image:
    """An RGB page with ``lines`` drawn top to bottom in black on white.

    ``size`` is the font size in pixels, ``rotate_deg`` a counter-clockwise skew (degrees),
    ``noise`` the standard deviation of added Gaussian noise (grey levels, 0-255 scale).
    """
    font = ImageFont.load_default(size=size)
    widths = [font.getbbox(line)[2] for line in lines]
    width = width or max(widths) + 2 * margin
    height = int(len(lines) * size * line_gap) + 2 * margin
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((margin, margin + int(i * size * line_gap)), line, font=font, fill="black")
    if rotate_deg:
        page = page.rotate(rotate_deg, expand=True, fillcolor="white", resample=Image.BICUBIC)
    if noise:
        rng = np.random.default_rng(seed)
        arr = np.asarray(page, np.float32) + rng.normal(0, noise, (page.height, page.width, 1))
        page = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    return page


def render_form(title: str, fields: list[tuple[str, str]], geometry: dict = FORM_GEOMETRY) -> Image.Image:
    """A fixed-layout form: ``title`` on top, then one row per (label, value), values in a column."""
    g = geometry
    font = ImageFont.load_default(size=g["size"])
    page = Image.new("RGB", (g["width"], g["height"]), "white")
    draw = ImageDraw.Draw(page)
    draw.text((g["margin"], g["margin"]), title, font=font, fill="black")
    for row, (label, value) in enumerate(fields, start=1):
        y = g["margin"] + row * g["pitch"]
        draw.text((g["margin"], y), label, font=font, fill="black")
        draw.text((g["value_x"], y), value, font=font, fill="black")
        draw.line((g["margin"], y + g["pitch"] - 12, g["width"] - g["margin"], y + g["pitch"] - 12), fill="grey")
    return page


def form_value_box(row: int, geometry: dict = FORM_GEOMETRY) -> tuple[float, float, float, float]:
    """Relative box ``(x0, y0, x1, y1)`` in [0, 1] of the value in field row ``row`` (1-based)."""
    g = geometry
    y = g["margin"] + row * g["pitch"]
    return (round((g["value_x"] - 10) / g["width"], 4), round((y - 8) / g["height"], 4),
            round((g["width"] - g["margin"]) / g["width"], 4), round((y + g["size"] + 12) / g["height"], 4))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    """``image`` encoded as ``fmt`` bytes."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def main() -> None:
    """Write the samples: four documents (one a two-page PDF) and a truncated JPEG (bad on purpose)."""
    SAMPLES.mkdir(exist_ok=True)
    receipt = render_page(RECEIPT, size=24)
    (SAMPLES / "receipt.png").write_bytes(encode(receipt))
    (SAMPLES / "lab-report.jpg").write_bytes(encode(render_form(LAB_TITLE, LAB_FIELDS), "JPEG", quality=90))
    (SAMPLES / "letter-skewed.png").write_bytes(
        encode(render_page(LETTER, size=30, rotate_deg=2.0, noise=12, seed=1)))
    memo = render_page(["Memo page 1 of 2", "Stock count moved to Monday"], size=30)
    memo2 = render_page(["Memo page 2 of 2", "Bring the scanner keys"], size=30)
    (SAMPLES / "memo.pdf").write_bytes(encode(memo, "PDF", resolution=100, save_all=True, append_images=[memo2]))
    jpeg = encode(receipt, "JPEG", quality=85)
    (SAMPLES / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    for path in sorted(SAMPLES.iterdir()):
        print(f"{path.relative_to(SAMPLES.parent)}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

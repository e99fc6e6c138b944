"""Synthetic labelled text lines: ``ocrstream model synth OUT --count N [--fonts DIR] [--text FILE]``.

Each line: a text drawn with a font (Pillow), cropped like the SROIE dev lines (margin x
``max(2, 0.25 h)``, y ``max(1, 0.10 h)`` px), then degraded the way scans and thermal receipts are
with albumentations (blur, sensor noise, JPEG, fading, skew, perspective, down-scaling); one
line in ``DOT_MATRIX_SHARE`` is drawn as dot-matrix print (each pixel of a coarse raster of the
glyphs becomes a round dot). Output: ``OUT/img/synth_NNNNNN.png`` and ``OUT/lines.jsonl`` in the
manifest format of :mod:`ocrstream.training.manifest` (mixes with real lines).

Fonts: ``--fonts DIR`` (``*.ttf``/``*.otf``), else the Debian packages ``fonts-dejavu-core``,
``fonts-liberation`` (Liberation Mono is a Courier-metric receipt-like monospace) and
``fonts-freefont-ttf`` (``apt-get install fonts-liberation fonts-freefont-ttf``), else any font
``fc-list`` reports. Text: lines of ``--text FILE`` (cut into 1..8 word spans) mixed with
generators of numbers, prices, dates, times, codes and receipt item lines (``GENERATORS``).
Deterministic for a given ``--seed``, font list and library versions.
"""

from __future__ import annotations

import json
import random
import re
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ocrstream.training.manifest import write_manifest

__all__ = ["DEBIAN_FONT_DIRS", "GENERATORS", "SynthError", "find_fonts", "make_degrader", "render_line",
           "synthesize", "text_sampler"]

#: Debian font packages looked up first (package -> folder).
DEBIAN_FONT_DIRS = {
    "fonts-dejavu-core": "/usr/share/fonts/truetype/dejavu",
    "fonts-liberation": "/usr/share/fonts/truetype/liberation",
    "fonts-liberation2": "/usr/share/fonts/truetype/liberation2",
    "fonts-freefont-ttf": "/usr/share/fonts/truetype/freefont",
}
#: symbol/maths fonts that cannot draw ordinary text.
_SKIP_FONT = re.compile(r"math|symbol|glyphicon|emoji|awesome|icons?\b", re.I)
#: glyph height range (px) before degradation; SROIE dev crops are ~25..70 px high.
FONT_PX = (18, 44)
DOT_MATRIX_SHARE = 0.12
#: share of lines in an italic/oblique font (receipts and forms are mostly upright).
ITALIC_SHARE = 0.1
_ITALIC = re.compile(r"italic|oblique", re.I)
#: share of lines drawn from the text file (when given) vs the generators.
TEXT_FILE_SHARE = 0.5
MAX_CHARS = 48
MAX_COUNT = 1_000_000


class SynthError(RuntimeError):
    """No usable font, or an unusable text file."""


#: stands for Pillow's bundled TrueType font (Aileron, ``ImageFont.load_default``): the last resort.
PILLOW_FONT = Path("<pillow-default>")


def find_fonts(fonts_dir: str | Path | None = None) -> list[Path]:
    """Font files to draw with, sorted: ``fonts_dir``, else the Debian packages, else ``fc-list``,
    else ``[PILLOW_FONT]`` (with a warning naming the Debian packages).

    Raises:
        SynthError: ``fonts_dir`` holds no ``.ttf``/``.otf`` font.
    """
    if fonts_dir is not None:
        found = [p for p in Path(fonts_dir).rglob("*") if p.suffix.lower() in (".ttf", ".otf")]
    else:
        found = [p for d in DEBIAN_FONT_DIRS.values() for p in Path(d).glob("*.ttf")]
        if not found:
            found = _fc_list()
    found = sorted(p for p in found if not _SKIP_FONT.search(p.name))
    if not found and fonts_dir is not None:
        raise SynthError(f"no .ttf/.otf fonts in {fonts_dir}")
    if not found:
        print(f"[synth] warning: no system fonts; using Pillow's bundled font only. For varied lines: "
              f"apt-get install {' '.join(DEBIAN_FONT_DIRS)}", file=sys.stderr)
        return [PILLOW_FONT]
    return found


def _fc_list() -> list[Path]:
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Path(line) for line in out.splitlines() if line.lower().endswith((".ttf", ".otf"))]


# -- text ------------------------------------------------------------------------------------
_WORDS = ["TOTAL", "CASH", "CHANGE", "GST", "TAX", "INVOICE", "QTY", "Subtotal", "Rounding", "Amount",
          "Discount", "Tel", "Fax", "No", "Date", "Time", "Cashier", "Table", "Item", "Price", "Thank you"]


def _number(r: random.Random) -> str:
    return str(r.choice([r.randint(0, 99), r.randint(100, 99_999), r.randint(10**5, 10**9)]))


def _price(r: random.Random) -> str:
    value = f"{r.uniform(0, 999) if r.random() < 0.8 else r.uniform(1000, 99_999):,.2f}"
    value = value.replace(",", "") if r.random() < 0.6 else value
    return r.choice(["", "", "RM", "RM ", "$", "-", "€ "]) + value


def _date(r: random.Random) -> str:
    y, m, d = r.randint(1995, 2030), r.randint(1, 12), r.randint(1, 28)
    month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][m - 1]
    return r.choice([f"{d:02d}/{m:02d}/{y}", f"{d:02d}-{m:02d}-{y % 100:02d}", f"{y}-{m:02d}-{d:02d}",
                     f"{d} {month} {y}", f"{d:02d}.{m:02d}.{y}", f"{month.upper()} {d}, {y}"])


def _time(r: random.Random) -> str:
    h, m, s = r.randint(0, 23), r.randint(0, 59), r.randint(0, 59)
    return r.choice([f"{h:02d}:{m:02d}", f"{h:02d}:{m:02d}:{s:02d}", f"{(h % 12) or 12}:{m:02d} {'AM' if h < 12 else 'PM'}"])


def _code(r: random.Random) -> str:
    def block(alphabet: str, n: int) -> str:
        return "".join(r.choice(alphabet) for _ in range(n))
    up, dig = string.ascii_uppercase, string.digits
    return r.choice([f"{block(up, 2)}{block(dig, 6)}", f"INV-{block(dig, 6)}", f"{block(up, 3)} {block(dig, 5)}",
                     f"{block(dig, 12)}", f"{block(dig, 4)}-{block(dig, 4)}", f"({block(dig, 6)}-{block(up, 1)})",
                     f"{block(up + dig, 8)}", f"03-{block(dig, 4)} {block(dig, 4)}"])


def _item(r: random.Random) -> str:
    qty, unit = r.randint(1, 12), r.uniform(0.5, 80)
    word = r.choice(_WORDS)
    return r.choice([f"{qty} X {unit:.2f} {qty * unit:.2f}", f"{word} {_price(r)}", f"{word}: {_number(r)}",
                     f"{qty} @ {unit:.2f}", f"{word.upper()} {_price(r)}"])


#: name -> generator of one line of text.
GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "number": _number, "price": _price, "date": _date, "time": _time, "code": _code, "item": _item,
}


def _file_spans(path: Path) -> list[list[str]]:
    lines = [line.split() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [words for words in lines if words]
    if not lines:
        raise SynthError(f"{path}: no text")
    return lines


def text_sampler(text_file: str | Path | None, generators: Sequence[str] = tuple(GENERATORS),
                 text_share: float = TEXT_FILE_SHARE) -> Callable[[random.Random], tuple[str, str]]:
    """A function ``rng -> (text, source)``: a 1..8-word span of a line of ``text_file`` (share
    ``text_share``; all lines when no generators), else one of ``generators``; at most 48 chars.

    Raises:
        SynthError: empty text file or unknown generator name.
    """
    unknown = set(generators) - set(GENERATORS)
    if unknown:
        raise SynthError(f"unknown generators {sorted(unknown)}; known: {', '.join(GENERATORS)}")
    spans = _file_spans(Path(text_file)) if text_file else []
    share = (1.0 if not generators else text_share) if spans else 0.0

    def sample(r: random.Random) -> tuple[str, str]:
        if r.random() < share:
            words = r.choice(spans)
            n = r.randint(1, min(8, len(words)))
            start = r.randint(0, len(words) - n)
            text, source = " ".join(words[start:start + n]), "text"
        else:
            source = r.choice(list(generators))
            text = GENERATORS[source](r)
        return text[:MAX_CHARS].strip() or "0", source

    return sample


# -- drawing ---------------------------------------------------------------------------------
def _dot_matrix(mask: np.ndarray, r: random.Random) -> np.ndarray:
    """Glyph coverage ``(h, w)`` float in [0, 1] redrawn as dot-matrix print (same size): about
    9-12 dots per glyph height."""
    h, w = mask.shape
    pitch = max(2, round(h / r.uniform(9, 12)))
    coarse = cv2.resize(mask, (max(1, w // pitch), max(1, h // pitch)), interpolation=cv2.INTER_AREA) > 0.35
    dots = np.zeros((coarse.shape[0] * pitch, coarse.shape[1] * pitch), np.float32)
    radius = max(1, pitch // 2)
    for y, x in zip(*np.nonzero(coarse)):
        cv2.circle(dots, (int(x * pitch + pitch // 2), int(y * pitch + pitch // 2)), radius, 1.0, -1)
    return cv2.resize(dots, (w, h), interpolation=cv2.INTER_LINEAR)


def render_line(text: str, font_path: Path, r: random.Random, *, dot_matrix: bool = False) -> np.ndarray:
    """``(H, W, 3)`` uint8 BGR crop of ``text`` in ``font_path``: paper tone, ink tone and size
    drawn from ``r``; margins as the SROIE dev crops (x ``max(2, 0.25 h)``, y ``max(1, 0.10 h)`` px)."""
    size = r.randint(*FONT_PX)
    if dot_matrix:
        size = max(size, 28)
    font = ImageFont.load_default(size=size) if font_path == PILLOW_FONT else ImageFont.truetype(str(font_path), size)
    x0, y0, x1, y1 = font.getbbox(text)
    canvas = Image.new("L", (int(x1 - x0 + 4), int(y1 - y0 + 4)), 0)
    ImageDraw.Draw(canvas).text((2 - x0, 2 - y0), text, font=font, fill=255)
    mask: np.ndarray = np.asarray(canvas, np.float32) / 255.0
    if dot_matrix:
        mask = _dot_matrix(mask, r)
    h = mask.shape[0]
    mx, my = max(2, round(0.25 * h)), max(1, round(0.10 * h))
    mask = cv2.copyMakeBorder(mask, my, my, mx, mx, cv2.BORDER_CONSTANT, value=0)
    paper = np.array([r.randint(200, 255)] * 3, np.float32) - np.array([0, r.randint(0, 12), r.randint(0, 12)])
    ink = np.array([r.randint(0, 90)] * 3, np.float32)
    image = paper * (1 - mask[..., None]) + ink * mask[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def make_degrader(seed: int):
    """An albumentations pipeline ``(image=BGR uint8) -> {"image": ...}`` for scan/thermal-print damage.

    Raises:
        SynthError: albumentations is not installed (``pip install 'ocrstream[synth]'``).
    """
    try:
        import albumentations as A
    except ImportError as exc:
        raise SynthError(f"{exc}: install with pip install 'ocrstream[synth]'") from None
    fill = 255
    return A.Compose([
        A.OneOf([A.Affine(rotate=(-2, 2), shear={"x": (-6, 6), "y": (0, 0)}, fit_output=True, fill=fill,
                          border_mode=cv2.BORDER_REPLICATE),
                 A.Perspective(scale=(0.01, 0.03), fit_output=True, fill=fill, border_mode=cv2.BORDER_REPLICATE)],
                p=0.5),
        A.RandomBrightnessContrast(brightness_limit=(-0.1, 0.25), contrast_limit=(-0.5, 0.1), p=0.6),  # fading
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5)),
                 A.Downscale(scale_range=(0.4, 0.8))], p=0.5),
        A.GaussNoise(std_range=(0.01, 0.06), p=0.4),
        A.ImageCompression(quality_range=(25, 90), p=0.5),
    ], seed=seed)


@dataclass(frozen=True)
class SynthReport:
    """What :func:`synthesize` wrote: ``count`` lines in ``manifest``, ``fonts`` used, CPU seconds."""

    manifest: Path
    count: int
    fonts: int
    cpu_s: float


def synthesize(out: str | Path, count: int, *, fonts_dir: str | Path | None = None,
               text_file: str | Path | None = None, generators: Sequence[str] = tuple(GENERATORS),
               seed: int = 0, prefix: str = "synth", degrade: bool = True, progress: bool = True) -> SynthReport:
    """Render ``count`` labelled lines into ``out/img/`` and ``out/lines.jsonl``.

    Raises:
        SynthError: no fonts, empty text file, unknown generator, albumentations missing.
        ValueError: ``count`` outside 1..1,000,000.
    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in 1..{MAX_COUNT}, got {count}")
    t0 = time.process_time()
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    fonts = find_fonts(fonts_dir)
    sample = text_sampler(text_file, generators)
    degrader = make_degrader(seed) if degrade else None
    r = random.Random(seed)
    upright = [f for f in fonts if not _ITALIC.search(f.name)] or fonts
    italic = [f for f in fonts if _ITALIC.search(f.name)] or fonts
    records = []
    for i in range(count):
        text, source = sample(r)
        font = r.choice(italic if r.random() < ITALIC_SHARE else upright)
        dots = r.random() < DOT_MATRIX_SHARE
        image = render_line(text, font, r, dot_matrix=dots)
        if degrader is not None:
            image = degrader(image=image)["image"]
        name = f"img/{prefix}_{i:06d}.png"
        cv2.imwrite(str(out / name), image)
        records.append({"id": f"{prefix}_{i:06d}", "image": name, "text": text,
                        "src": f"synth:{source};font={font.name}{';dot-matrix' if dots else ''}"})
        if progress and (i + 1) % 200 == 0:
            print(f"[synth] {i + 1}/{count} lines", file=sys.stderr, flush=True)
    manifest = out / "lines.jsonl"
    write_manifest(manifest, records)
    (out / "synth.json").write_text(json.dumps({"count": count, "seed": seed, "fonts": [str(f) for f in fonts],
                                                "text_file": str(text_file) if text_file else None,
                                                "generators": list(generators)}, indent=2))
    return SynthReport(manifest, count, len(fonts), time.process_time() - t0)

"""The hostile corpus of issue 8: bad, odd and huge inputs, each with its expected outcome per door.

    python -m tools.hostile_corpus            # lists the cases and their expectations (no stack needed)
    python -m tools.hostile_corpus --write D  # also writes every case's bytes into folder D

Nothing binary is committed: every input is generated at test time, with Pillow, pikepdf,
:mod:`zipfile` and :mod:`tools.render_samples` (real rendered text pages where
the document must come out ``done``). Only the formats no library here writes (HEIC, and AVIF
when Pillow lacks it) are a few magic bytes, and the "lying" JPEG is a Pillow JPEG whose SOF0
width/height fields are patched.

A :class:`Case` is one input: its bytes (made lazily by ``make(budget)``, sized from the
:class:`Budget` so bombs are "just over" the configured limit and stay cheap), the doors it goes
through and, per door, an :class:`Expect`:

* ``done`` (optionally with the text lines that must be read),
* ``failed`` with the stage and the typed error of :mod:`ocrstream.errors`,
* ``refused`` at the door: HTTP answers ``http_status`` (413 over the byte limit, 415 not a
  supported type, 401 no/bad API key, 422 malformed request) and the CLI reports it and exits
  non-zero; in both cases with no dead letter and no ``documents`` row.

The expectations are the requirements of issue 8 ("What to build" 1 and 4), not what the code
does today. Where the issue is silent the choice is written next to the case.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, features

from ocrstream.settings import Settings
from tools.render_samples import encode, render_page


class Door(str, Enum):
    """Where a document enters: ``ocrstream submit``, ``POST /v1/documents``, the raw topic."""

    CLI = "cli"
    HTTP = "http"
    RAW = "raw"


ALL_DOORS = (Door.CLI, Door.HTTP, Door.RAW)


#: Budgets of the test and benchmark environment (tools/hostile_harness.py): small enough that
#: code which renders whole documents in memory cannot take a shared machine down; the bombs are
#: sized from them (just over).
TEST_BUDGET_ENV = {
    "OCRSTREAM_MAX_DOCUMENT_BYTES": str(8 * 1024**2),
    "OCRSTREAM_MAX_IMAGE_PIXELS": str(40_000_000),
    "OCRSTREAM_MAX_DOCUMENT_PIXELS": str(100_000_000),
    "OCRSTREAM_MAX_PAGES": "200",
}


@dataclass(frozen=True)
class Budget:
    """The limits the corpus is sized against (bytes, pixels, pages; from :class:`Settings`)."""

    max_document_bytes: int
    max_image_pixels: int
    max_document_pixels: int
    max_pages: int
    pdf_dpi: int

    @classmethod
    def from_settings(cls, s: Settings) -> "Budget":
        return cls(s.max_document_bytes, s.max_image_pixels, s.max_document_pixels, s.max_pages, s.pdf_dpi)


@dataclass(frozen=True)
class Expect:
    """The expected outcome of one case at one door.

    ``outcome``: ``"done"``, ``"failed"`` or ``"refused"``. ``stage``/``error_type``: for
    ``failed`` (error type = a class name of ocrstream/errors.py). ``http_status``: what
    ``POST /v1/documents`` answers (202 when accepted). ``text``: lines a ``done`` document must
    contain (each matched to its closest line of the result, CER <= ``TEXT_MAX_CER``).
    """

    outcome: str
    stage: str | None = None
    error_type: str | None = None
    http_status: int = 202
    text: tuple[str, ...] | None = None

    def describe(self, door: "Door | None" = None) -> str:
        """Short form for tables: ``done``, ``failed preprocess/NotAnImageError``, ``refused 415``
        (at the CLI door: ``refused (exit != 0)``; the HTTP status is the HTTP door's)."""
        http = door in (None, Door.HTTP)
        if self.outcome == "failed":
            return f"failed {self.stage}/{self.error_type}" + (
                f" (http {self.http_status})" if http and self.http_status != 202 else "")
        if self.outcome == "refused":
            return f"refused {self.http_status}" if http else "refused (exit != 0)"
        return "done"


TEXT_MAX_CER = 0.15  # clean 28-px renderings read at ~1% CER (tests/test_pipeline_e2e.py); 15% = "read, not garbage"


def done(*lines: str) -> Expect:
    return Expect("done", text=lines or None)


def failed(stage: str, error_type: str, http_status: int = 202) -> Expect:
    return Expect("failed", stage, error_type, http_status)


def refused(http_status: int) -> Expect:
    return Expect("refused", http_status=http_status)


def at_every_door(expect: Expect, doors: tuple[Door, ...] = ALL_DOORS) -> dict[Door, Expect]:
    return {door: expect for door in doors}


DECODER_DOORS = (Door.HTTP, Door.RAW)  # past ingest the door makes no difference; CLI runs cost ~2 CPU-s each


def bad_page(error_type: str, doors: tuple[Door, ...] = DECODER_DOORS) -> dict[Door, Expect]:
    """Accepted at the door (it is a supported type), failed by preprocess's decoder."""
    return at_every_door(failed("preprocess", error_type), doors)


def odd_but_valid(*lines: str) -> dict[Door, Expect]:
    """A valid image of an unusual kind: done (through HTTP: what happens after ingest is door-independent)."""
    return {Door.HTTP: done(*lines)}


def unsupported() -> dict[Door, Expect]:
    """Not a supported type: 415 / CLI refusal at the doors that can answer; the raw topic cannot
    answer, so ingest fails it (dead letter) - the issue is silent on the raw topic's stage."""
    return {Door.CLI: refused(415), Door.HTTP: refused(415), Door.RAW: failed("ingest", "NotAnImageError")}


def over_limit() -> dict[Door, Expect]:
    """Over ``max_document_bytes``: 413 before the body is read / CLI refusal; raw topic: ingest fails it."""
    return {Door.CLI: refused(413), Door.HTTP: refused(413), Door.RAW: failed("ingest", "DocumentTooLargeError")}


class Key(str, Enum):
    """How the raw-topic key is chosen when a case does not give bytes."""

    UNIQUE = "unique"  # a fresh valid id per run (hostile-<run>-<case>)
    NONE = "none"  # no key at all


@dataclass(frozen=True)
class Case:
    """One hostile input.

    ``make(budget) -> bytes`` makes the document; ``expect`` maps each door it is submitted
    through to its :class:`Expect`. ``filename`` (``str`` for CLI/HTTP, ``bytes`` allowed for the
    raw ``filename`` header; None: ``<name><ext>``). Raw topic only: ``key`` (bytes, or a
    :class:`Key`), ``headers`` (list of (str, bytes); None: ``filename`` only), ``victim``
    (the name of an earlier case whose document id, from its first door, is used as key: an overwrite attempt; that
    document must be unchanged afterwards). HTTP only: ``http_auth`` (``"key"``, ``"none"``,
    ``"bad"``) and ``http_field`` (the multipart field carrying the file). ``template``: the
    fixed-layout template named at every door.
    """

    name: str
    make: Callable[[Budget], bytes]
    expect: dict[Door, Expect]
    what: str
    ext: str = ".png"
    filename: str | bytes | None = None
    template: str | bytes | None = None
    key: bytes | Key = Key.UNIQUE
    headers: list[tuple[str, bytes]] | None = None
    victim: str | None = None
    http_auth: str = "key"
    http_field: str = "file"
    control: bool = False  # a good document (before/after the corpus), not a hostile one

    @property
    def doors(self) -> tuple[Door, ...]:
        return tuple(self.expect)

    def default_filename(self) -> str:
        return f"{self.name}{self.ext}"


# --- generators (all small and deterministic) ----------------------------------------------------


def text_page(*lines: str) -> Image.Image:
    """A rendered RGB page of ``lines`` (28-px font), the content of every ``done`` case."""
    return render_page(list(lines), size=28)


def png_of(*lines: str) -> Callable[[Budget], bytes]:
    return lambda b: encode(text_page(*lines))


def jpeg_page(*lines: str, **options) -> bytes:
    return encode(text_page(*lines), "JPEG", quality=90, **options)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def jpeg_claiming(width: int, height: int) -> bytes:
    """A ~0.6 KB Pillow JPEG (16x16) whose SOF0 header claims ``width`` x ``height`` (ITU T.81 B.2.2)."""
    small = encode(Image.new("RGB", (16, 16), (128, 128, 128)), "JPEG", quality=50)
    sof = small.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return small[: sof + 5] + struct.pack(">HH", height, width) + small[sof + 9:]


def png_bomb(_: Budget) -> bytes:
    """20000 x 20000 1-bit PNG: 400 Mpx in ~50 KB (the classic decompression bomb)."""
    return encode(Image.new("1", (20_000, 20_000), 1), "PNG")


def jpeg_bomb(b: Budget) -> bytes:
    """A white greyscale JPEG just over the per-page pixel limit (~100 KB for 40 Mpx)."""
    side = math.isqrt(int(b.max_image_pixels * 1.1)) + 1
    return encode(Image.new("L", (side, side), 255), "JPEG", quality=50)


def tiff_frames(count: int, size: tuple[int, int] = (8, 8), first: tuple[int, int] | None = None) -> bytes:
    """A multi-frame 1-bit TIFF (CCITT group 4): ``count`` frames of ``size``, the first ``first``."""
    frames = [Image.new("1", size, 1) for _ in range(count)]
    if first:
        frames[0] = Image.new("1", first, 1)
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", save_all=True, append_images=frames[1:], compression="group4")
    return buf.getvalue()


def tiff_over_pixel_budget(b: Budget) -> bytes:
    """A small first frame, then frames each under the page limit whose sum is over the document budget."""
    side = math.isqrt(int(b.max_image_pixels * 0.9))
    count = b.max_document_pixels // (side * side) + 1
    return tiff_frames(count + 1, (side, side), first=(64, 64))


def pdf_blank_pages(pages: int, side_pt: float) -> bytes:
    """A PDF of ``pages`` blank square pages of ``side_pt`` points (pikepdf; ~100 bytes a page)."""
    import pikepdf

    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page(page_size=(side_pt, side_pt))
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def pdf_bomb(b: Budget) -> bytes:
    """Few KB, pages each half the per-page pixel limit at ``pdf_dpi``, together over the document budget."""
    side_px = math.isqrt(b.max_image_pixels // 2)
    pages = b.max_document_pixels // (side_px * side_px) + 2
    return pdf_blank_pages(pages, side_px * 72 / b.pdf_dpi)


def pdf_of(*pages: Image.Image) -> bytes:
    return encode(pages[0], "PDF", resolution=100, save_all=True, append_images=list(pages[1:]))


def pdf_encrypted(user_password: str, *lines: str) -> bytes:
    """A rendered one-page PDF encrypted with AES-256 (pikepdf); ``""`` = owner password only."""
    import pikepdf

    with pikepdf.open(io.BytesIO(pdf_of(text_page(*lines)))) as pdf:
        buf = io.BytesIO()
        pdf.save(buf, encryption=pikepdf.Encryption(user=user_password, owner="owner-secret", R=6,
                                                      allow=pikepdf.Permissions(extract=False)))
    return buf.getvalue()


def pdf_malformed(_: Budget) -> bytes:
    """A PDF header, then bytes that are no PDF objects."""
    return b"%PDF-1.7\n" + np.random.default_rng(8).integers(0, 256, 2048, dtype=np.uint8).tobytes() + b"\n%%EOF\n"


def gif_animated(_: Budget) -> bytes:
    frames = [text_page("ANIMATED FRAME ONE 815")] + [text_page(f"OTHER FRAME {i}") for i in (2, 3)]
    frames = [f.resize(frames[0].size) for f in frames]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return buf.getvalue()


def png_16bit(*lines: str) -> bytes:
    grey = np.asarray(text_page(*lines).convert("L"), np.uint16) * 257
    return encode(Image.fromarray(grey), "PNG")  # mode I;16


def tiff_16bit(*lines: str) -> bytes:
    """A 16-bit greyscale TIFF (mode I;16): img2pdf refuses more than 8 bits per sample."""
    grey = np.asarray(text_page(*lines).convert("L"), np.uint16) * 257
    return encode(Image.fromarray(grey), "TIFF")


def webp_blank_first_frame(*lines: str) -> bytes:
    """An animated WebP: a blank white first frame, the text on the second (every frame is a page)."""
    page = text_page(*lines)
    return encode(Image.new("RGB", page.size, "white"), "WEBP", save_all=True, append_images=[page], duration=500,
                  lossless=True)


def png_ztxt_bomb(*lines: str, inflated: int = 200 * 1024**2) -> bytes:
    """A page PNG with a zTXt chunk (before IDAT) that inflates to ``inflated`` bytes (~0.2 MB in the file)."""
    page = encode(text_page(*lines))
    z = zlib.compressobj(9)
    text = b"".join(z.compress(b"x" * 2**20) for _ in range(inflated // 2**20)) + z.flush()
    body = b"zTXt" + b"Comment\0\0" + text
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return page[:33] + chunk + page[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def pdf_nested(*lines: str, depth: int = 300) -> bytes:
    """A one-page PDF whose page sits under ``depth`` nested /Pages nodes: PDFium walks it, QPDF
    (pikepdf) gives up on the tree (it did at 300, not at 100)."""
    import pikepdf

    with pikepdf.open(io.BytesIO(pdf_of(text_page(*lines)))) as pdf:
        page = pdf.Root.Pages.Kids[0]
        node = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Pages, Kids=pikepdf.Array([page]), Count=1))
        page.Parent = node
        for _ in range(depth - 1):
            parent = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Pages, Kids=pikepdf.Array([node]),
                                                          Count=1))
            node.Parent = parent
            node = parent
        pdf.Root.Pages = node
        buf = io.BytesIO()
        pdf.save(buf)
    return buf.getvalue()


def pdf_text_in_box(text: str, media: list[float], at: tuple[float, float], crop: list[float] | None = None) -> bytes:
    """A one-page born-digital PDF (Helvetica text ``text`` drawn at ``at``, points) whose page
    has the MediaBox ``media`` and, if given, the CropBox ``crop`` (odd boxes: negative, reversed,
    a crop box outside the media box)."""
    import pikepdf

    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                                                BaseFont=pikepdf.Name.Helvetica))
    page = pikepdf.Dictionary(Type=pikepdf.Name.Page, MediaBox=pikepdf.Array(media),
                              Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
                              Contents=pdf.make_stream(b"BT /F1 24 Tf %.1f %.1f Td (%s) Tj ET" % (*at, text.encode())))
    if crop is not None:
        page.CropBox = pikepdf.Array(crop)
    pdf.pages.append(pikepdf.Page(page))
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


def png_transparent(*lines: str) -> bytes:
    """Black text on a fully transparent background (RGBA, colour of transparent pixels = black)."""
    ink = 255 - np.asarray(text_page(*lines).convert("L"))
    rgba = np.zeros(ink.shape + (4,), np.uint8)
    rgba[..., 3] = ink
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def jpeg_exif_rotated(*lines: str) -> bytes:
    """Pixels stored rotated 90 degrees counter-clockwise, EXIF Orientation 6 (rotate 90 CW to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = text_page(*lines).transpose(Image.Transpose.ROTATE_90)
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(encode(stored, "JPEG", exif=exif.tobytes())))).size \
        == text_page(*lines).size
    return encode(stored, "JPEG", quality=90, exif=exif.tobytes())


def jpeg_huge_exif(*lines: str) -> bytes:
    """~60 KB EXIF (UserComment), close to the 64 KB APP1 segment maximum."""
    exif = Image.Exif()
    exif[0x9286] = b"ASCII\0\0\0" + b"x" * 60_000
    return jpeg_page(*lines, exif=exif.tobytes())


def jpeg_huge_icc(*lines: str) -> bytes:
    """A 2 MB ICC block (not a valid profile) split over ~32 APP2 segments."""
    return jpeg_page(*lines, icc_profile=bytes(range(256)) * 8192)


def png_huge_text(*lines: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "x" * 2_000_000)
    return encode(text_page(*lines), "PNG", pnginfo=info)


def zip_of(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("page.png", data)
    return buf.getvalue()


HEIC_MAGIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
AVIF_MAGIC = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64)


def avif(*lines: str) -> bytes:
    return encode(text_page(*lines), "AVIF") if features.check("avif") else AVIF_MAGIC


def noise_png(b: Budget) -> bytes:
    """An incompressible RGB PNG a little over ``max_document_bytes``."""
    side = math.isqrt(int(b.max_document_bytes * 1.05) // 3) + 1
    return encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8)), "PNG",
                  compress_level=1)


def padded_to_limit(b: Budget) -> bytes:
    """A good page PNG padded with zeros after IEND to exactly ``max_document_bytes``."""
    page = encode(text_page("EXACTLY AT THE LIMIT 64"))
    return page + bytes(b.max_document_bytes - len(page))


def blank(width: int, height: int, colour: str = "white") -> Callable[[Budget], bytes]:
    return lambda b: encode(Image.new("RGB", (width, height), colour), "PNG")


def const(data: bytes) -> Callable[[Budget], bytes]:
    return lambda b: data


GOOD = ("GOOD PAGE AFTER CORPUS 2718",)
FILENAME_PAGE = ("HOSTILE FILENAME PAGE 5150",)
RAW_PAGE = "RAW TOPIC DOOR"  # + case-specific number: different bytes for each raw case


def _raw_page(n: int) -> Callable[[Budget], bytes]:
    return png_of(f"{RAW_PAGE} {n}")


def _filename_page(name: str) -> Callable[[Budget], bytes]:
    return png_of(*FILENAME_PAGE, name.upper())


# --- the table ------------------------------------------------------------------------------------

NOT_IMAGE = unsupported()
ONLY_HTTP_RAW = (Door.HTTP, Door.RAW)

CASES: list[Case] = [
    Case("control-before", png_of("CONTROL BEFORE CORPUS 1618"), at_every_door(done("CONTROL BEFORE CORPUS 1618")),
         "good rendered PNG, warms the models up", control=True),
    # --- empty, not images, unsupported types -----------------------------------------------------
    Case("empty", const(b""), {Door.CLI: refused(400), Door.HTTP: refused(400),
                               Door.RAW: failed("ingest", "EmptyDocumentError")},
         "0 bytes: refused at the CLI/HTTP doors (400), a failed row from the raw topic"),
    Case("text-named-jpg", const(b"this is a plain text file, not a photo\n" * 20), NOT_IMAGE,
         "text file named .jpg", ext=".jpg"),
    Case("heic", const(HEIC_MAGIC), NOT_IMAGE, "HEIC (ftypheic magic)", ext=".heic"),
    Case("avif", lambda b: avif("AVIF PAGE 31"), NOT_IMAGE, "AVIF (Pillow)", ext=".avif"),
    Case("svg", const(b'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="100">'
                      b'<text x="10" y="50">SVG TEXT</text></svg>'), NOT_IMAGE, "SVG with text", ext=".svg"),
    Case("zip", lambda b: zip_of(encode(text_page("ZIPPED PAGE"))), NOT_IMAGE, "ZIP holding a PNG", ext=".zip"),
    # --- truncated, corrupt, lying ----------------------------------------------------------------
    Case("jpeg-truncated", lambda b: truncated(jpeg_page("TRUNCATED JPEG PAGE")), bad_page("TruncatedImageError", ALL_DOORS),
         "JPEG cut in half", ext=".jpg"),
    Case("png-truncated", lambda b: truncated(encode(text_page("TRUNCATED PNG PAGE"))), bad_page("TruncatedImageError"),
         "PNG cut in half"),
    Case("jpeg-claims-10000x11000", lambda b: jpeg_claiming(10_000, 11_000), bad_page("CorruptImageError"),
         "0.6 KB JPEG whose header claims 10000x11000: a header its bytes cannot hold (checked first)", ext=".jpg"),
    Case("jpeg-header-lies", lambda b: jpeg_claiming(*[math.isqrt(b.max_image_pixels * 6 // 10)] * 2),
         bad_page("CorruptImageError"),
         "0.6 KB JPEG whose header claims 60% of the page pixel budget (4898x4898 at 40 Mpx): a lying header",
         ext=".jpg"),
    Case("pdf-malformed", pdf_malformed, bad_page("CorruptImageError"), "%PDF- header then random bytes", ext=".pdf"),
    Case("pdf-encrypted", lambda b: pdf_encrypted("user-secret", "ENCRYPTED PDF"), bad_page("EncryptedDocumentError", ALL_DOORS),
         "AES-256 PDF with a user password", ext=".pdf"),
    # --- bombs and budgets ------------------------------------------------------------------------
    Case("png-bomb", png_bomb, bad_page("DocumentTooLargeError"), "20000x20000 1-bit PNG (~50 KB)"),
    Case("jpeg-bomb", jpeg_bomb, bad_page("DocumentTooLargeError"), "white JPEG just over the page pixel limit",
         ext=".jpg"),
    Case("tiff-1000-frames", lambda b: tiff_frames(1000), bad_page("DocumentTooLargeError"),
         "TIFF of 1000 8x8 frames (over max_pages)", ext=".tif"),
    Case("tiff-frames-over-budget", tiff_over_pixel_budget, bad_page("DocumentTooLargeError"),
         "64x64 first frame, then frames under the page limit summing over the document pixel budget", ext=".tif"),
    Case("pdf-500-pages", lambda b: pdf_blank_pages(500, 300), bad_page("DocumentTooLargeError"),
         "500 blank pages (over max_pages)", ext=".pdf"),
    Case("pdf-bomb", pdf_bomb, bad_page("DocumentTooLargeError"),
         "few KB, large blank pages each within the page limit, together over the document pixel budget", ext=".pdf"),
    Case("over-limit", noise_png, over_limit(), "noise PNG just over OCRSTREAM_MAX_DOCUMENT_BYTES"),
    Case("at-limit", padded_to_limit, at_every_door(done("EXACTLY AT THE LIMIT 64"), (Door.CLI, Door.HTTP)),
         "good PNG padded after IEND to exactly the byte limit"),
    # --- odd but valid: must be done --------------------------------------------------------------
    Case("gif-animated", gif_animated, odd_but_valid("ANIMATED FRAME ONE 815"), "3-frame animated GIF",
         ext=".gif"),
    Case("jpeg-cmyk", lambda b: encode(text_page("CMYK JPEG PAGE 2044").convert("CMYK"), "JPEG", quality=90),
         odd_but_valid("CMYK JPEG PAGE 2044"), "CMYK JPEG (Adobe)", ext=".jpg"),
    Case("png-16bit", lambda b: png_16bit("SIXTEEN BIT PNG 4096"), odd_but_valid("SIXTEEN BIT PNG 4096"),
         "16-bit greyscale PNG"),
    Case("png-transparent", lambda b: png_transparent("TRANSPARENT BACKGROUND 77"),
         odd_but_valid("TRANSPARENT BACKGROUND 77"), "black text on a transparent background (RGBA)"),
    Case("png-1x1", blank(1, 1), odd_but_valid(), "1x1 PNG"),
    Case("png-1x20000", blank(1, 20_000), odd_but_valid(), "1x20000 PNG"),
    Case("png-20000x1", blank(20_000, 1), odd_but_valid(), "20000x1 PNG"),
    Case("page-all-black", blank(1240, 1754, "black"), odd_but_valid(), "A4 at 150 dpi, all black"),
    Case("page-all-white", blank(1240, 1754, "white"), odd_but_valid(), "A4 at 150 dpi, all white"),
    Case("jpeg-exif-rotated", lambda b: jpeg_exif_rotated("EXIF ROTATED PAGE 606"),
         odd_but_valid("EXIF ROTATED PAGE 606"), "pixels rotated 90 deg, EXIF Orientation 6", ext=".jpg"),
    Case("webp", lambda b: encode(text_page("WEBP PAGE 1987"), "WEBP", quality=90), odd_but_valid("WEBP PAGE 1987"),
         "WebP", ext=".webp"),
    Case("bmp", lambda b: encode(text_page("BITMAP PAGE 24"), "BMP"), odd_but_valid("BITMAP PAGE 24"), "BMP",
         ext=".bmp"),
    Case("tiff-two-pages", lambda b: encode(text_page("TIFF PAGE ONE"), "TIFF", save_all=True, compression="tiff_lzw",
                                            append_images=[text_page("TIFF PAGE TWO")]),
         odd_but_valid("TIFF PAGE ONE", "TIFF PAGE TWO"), "2-page LZW TIFF", ext=".tif"),
    Case("pdf-two-pages", lambda b: pdf_of(text_page("PDF PAGE ONE 11"), text_page("PDF PAGE TWO 22")),
         odd_but_valid("PDF PAGE ONE 11", "PDF PAGE TWO 22"), "2-page PDF (Pillow)", ext=".pdf"),
    Case("pdf-owner-password", lambda b: pdf_encrypted("", "OWNER PASSWORD ONLY 9"),
         odd_but_valid("OWNER PASSWORD ONLY 9"), "encrypted PDF, empty user password (opens)", ext=".pdf"),
    Case("polyglot-jpeg-zip", lambda b: jpeg_page("POLYGLOT JPEG ZIP 3") + zip_of(b"payload"),
         odd_but_valid("POLYGLOT JPEG ZIP 3"), "valid JPEG followed by a ZIP", ext=".jpg"),
    Case("jpeg-trailing-padding", lambda b: jpeg_page("TRAILING PADDING 4") + bytes(4096),
         odd_but_valid("TRAILING PADDING 4"), "valid JPEG followed by 4 KB of zeros", ext=".jpg"),
    Case("jpeg-huge-exif", lambda b: jpeg_huge_exif("HUGE EXIF BLOCK 60"), odd_but_valid("HUGE EXIF BLOCK 60"),
         "60 KB EXIF UserComment", ext=".jpg"),
    Case("jpeg-huge-icc", lambda b: jpeg_huge_icc("HUGE ICC BLOCK 2"), odd_but_valid("HUGE ICC BLOCK 2"),
         "2 MB ICC block (not a valid profile)", ext=".jpg"),
    Case("tiff-16bit", lambda b: tiff_16bit("SIXTEEN BIT TIFF 65"), odd_but_valid("SIXTEEN BIT TIFF 65"),
         "16-bit greyscale TIFF", ext=".tif"),
    Case("webp-blank-first-frame", lambda b: webp_blank_first_frame("SECOND FRAME TEXT 92"),
         odd_but_valid("SECOND FRAME TEXT 92"), "animated WebP, blank first frame (every frame is a page)",
         ext=".webp"),
    Case("png-ztxt-bomb", lambda b: png_ztxt_bomb("ZTXT BOMB PAGE 200"), odd_but_valid("ZTXT BOMB PAGE 200"),
         "zTXt chunk inflating to 200 MB"),
    Case("pdf-nested", lambda b: pdf_nested("NESTED PAGE TREE 300"), odd_but_valid("NESTED PAGE TREE 300"),
         "one page under 300 nested /Pages nodes", ext=".pdf"),
    Case("pdf-negative-mediabox", lambda b: pdf_text_in_box("NEGATIVE MEDIABOX 42", [0, 0, -612, -792], (-540, -92)),
         odd_but_valid("NEGATIVE MEDIABOX 42"), "born-digital page, MediaBox [0 0 -612 -792]", ext=".pdf"),
    Case("pdf-crop-outside-media", lambda b: pdf_text_in_box("CROPBOX OUTSIDE 17", [-612, -792, 0, 0], (-540, -92),
                                                             crop=[0, 0, 612, 792]),
         odd_but_valid("CROPBOX OUTSIDE 17"), "born-digital page whose CropBox misses its negative MediaBox",
         ext=".pdf"),
    Case("png-huge-text-chunk", lambda b: png_huge_text("HUGE TEXT CHUNK 8"), odd_but_valid("HUGE TEXT CHUNK 8"),
         "2 MB tEXt chunk"),
    # --- hostile filenames (a good page: done, stored filename sanitised) ------------------------
    Case("filename-nul", _filename_page("nul"), at_every_door(done(*FILENAME_PAGE), ONLY_HTTP_RAW),
         "NUL byte in the filename", filename="invoice\x00.png"),
    Case("filename-traversal", _filename_page("traversal"), at_every_door(done(*FILENAME_PAGE), ONLY_HTTP_RAW),
         "path traversal filename", filename="../../etc/passwd"),
    Case("filename-300-chars", _filename_page("long"), at_every_door(done(*FILENAME_PAGE), ONLY_HTTP_RAW),
         "300-character filename", filename="a" * 296 + ".png"),
    Case("filename-control-chars", _filename_page("control"), at_every_door(done(*FILENAME_PAGE)),
         "ESC, BEL, TAB, DEL in the filename", filename="bad\x1b[31m\x07\t\x7fname.png"),
    Case("filename-rtl-override", _filename_page("rtl"), at_every_door(done(*FILENAME_PAGE)),
         "RIGHT-TO-LEFT OVERRIDE (invoice<RLO>gnp.exe)", filename="invoice\u202egnp.exe"),
    Case("filename-emoji", _filename_page("emoji"), at_every_door(done(*FILENAME_PAGE)),
         "emoji filename (allowed, kept)", filename="\U0001f4c4 receipt \U0001f9fe.png"),
    Case("filename-non-utf8", _filename_page("bytes"), {Door.RAW: done(*FILENAME_PAGE)},
         "raw header filename that is not UTF-8", filename=b"\xff\xfe\xc3(name.png"),
    # --- raw topic: keys and headers ----------------------------------------------------------------
    Case("raw-no-key", _raw_page(1), {Door.RAW: done(f"{RAW_PAGE} 1")}, "no key, no headers", key=Key.NONE,
         headers=[]),
    Case("raw-key-non-utf8", _raw_page(2), {Door.RAW: failed("ingest", "InvalidSubmissionError")},
         "key that is not UTF-8", key=b"\xff\xfe\xfd-doc"),
    Case("raw-key-10kb", _raw_page(3), {Door.RAW: failed("ingest", "InvalidSubmissionError")}, "10 KB key",
         key=b"k" * 10_240),
    Case("raw-key-traversal", _raw_page(4), {Door.RAW: done(f"{RAW_PAGE} 4")},
         "key '../../documents/x': only hashed into the scoped id and kept as external_id, never a path",
         key=b"../../documents/x"),
    Case("raw-key-hijack", _raw_page(5), {Door.RAW: done(f"{RAW_PAGE} 5")},
         "key = the id of an earlier document (pdf-two-pages via HTTP): must not overwrite it",
         victim="pdf-two-pages"),
    Case("raw-template-non-utf8", _raw_page(6), {Door.RAW: failed("ingest", "InvalidSubmissionError")},
         "template header that is not UTF-8", template=b"\xff\xfe\x00lab"),
    Case("raw-template-traversal", _raw_page(7), {Door.RAW: failed("preprocess", "UnknownTemplateError")},
         "template header '../../etc/passwd'", template="../../etc/passwd"),
    Case("raw-garbage-headers", _raw_page(8), {Door.RAW: done(f"{RAW_PAGE} 8")},
         "50 binary headers, duplicate filename headers",
         headers=[(f"x-junk-{i}", bytes(range(i, i + 40))) for i in range(50)]
         + [("filename", b"first.png"), ("filename", b"\x00second")]),
    # --- the HTTP door's own refusals ---------------------------------------------------------------
    Case("http-no-api-key", png_of("NO API KEY"), {Door.HTTP: refused(401)}, "no Authorization header",
         http_auth="none"),
    Case("http-bad-api-key", png_of("BAD API KEY"), {Door.HTTP: refused(401)}, "unknown bearer token",
         http_auth="bad"),
    Case("http-no-file-field", png_of("WRONG FIELD"), {Door.HTTP: refused(422)},
         "multipart without the 'file' field", http_field="upload"),
    Case("control-after", png_of(*GOOD), at_every_door(done(*GOOD)), "good rendered PNG after the corpus",
         control=True),
]


def corpus() -> list[Case]:
    """Every case, in submission order (the controls first and last)."""
    return list(CASES)


def submissions() -> list[tuple[Case, Door]]:
    """Every (case, door) pair, in submission order."""
    return [(case, door) for case in CASES for door in case.doors]


def main() -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write each case's bytes into this folder")
    args = parser.parse_args()
    budget = Budget.from_settings(Settings.from_env(TEST_BUDGET_ENV))
    for case in CASES:
        data = case.make(budget) if args.write else b""
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / case.default_filename()).write_bytes(data)
        expect = "; ".join(f"{d.value}: {e.describe(d)}" for d, e in case.expect.items())
        print(f"{case.name:<26} {len(data):>9}  {expect}  -- {case.what}")
    print(f"{len(CASES)} cases, {len(submissions())} submissions")


if __name__ == "__main__":
    main()

"""Safe decoding: real files made here in every accepted format, every guard, and the isolated worker.

Every file is made in the test (Pillow, pikepdf, hand-written TIFF/JPEG bytes): nothing is read
from disk. Header-level rules run in-process (:mod:`ocrstream.ocr.decode`); the worker
tests start real spawned processes (:mod:`services.preprocess.worker`).
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import struct
import zipfile

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocrstream.errors import (
    ConfigurationError,
    CorruptImageError,
    DecoderCrashedError,
    DocumentTooLargeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    NotAnImageError,
    TruncatedImageError,
)
from ocrstream.ocr.decode import Budget, decode_pages, open_document
from ocrstream.ocr.formats import identify, is_supported, sniff
from ocrstream.ocr.templates import get_template
from services.preprocess.worker import DecoderPool, WorkerConfig
from tools.render_samples import LAB_FIELDS, LAB_TITLE, encode, render_form, render_page

PAGE = render_page(["Total 12.50"], size=24)
BUDGET = Budget(max_page_pixels=10**8)


def dark_text_on_light(page: np.ndarray) -> bool:
    return page.min() < 80 and np.median(page) > 200


def pages_of(data: bytes, budget: Budget = BUDGET) -> list[np.ndarray]:
    return list(decode_pages(data, budget))


def pdf_of(images: list[Image.Image], resolution: float = 72) -> bytes:
    buf = io.BytesIO()
    images[0].save(buf, "PDF", resolution=resolution, save_all=True, append_images=images[1:])
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("notes.txt", "hello " * 100)
    return buf.getvalue()


def tiff(frames: list[tuple[int, int]], compression: int = 1) -> bytes:
    """A little-endian TIFF whose frames claim these (width, height) sizes, 8-bit grey, sharing one
    4-byte strip: a file of a few bytes per frame (TIFF 6.0 sections 2 and 8)."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 12) + b"\xff\xff\xff\xff")  # header, then the strip at 8
    for k, (w, h) in enumerate(frames):
        entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, compression), (262, 3, 1), (273, 4, 8),
                   (277, 3, 1), (278, 4, h), (279, 4, 4)]
        ifd_end = len(out) + 2 + 12 * len(entries) + 4
        out += struct.pack("<H", len(entries))
        for tag, typ, value in entries:
            out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
        out += struct.pack("<I", ifd_end if k + 1 < len(frames) else 0)
    return bytes(out)


# -- formats and pixels ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt,kind", [("PNG", "png"), ("JPEG", "jpeg"), ("BMP", "bmp"),
                                      ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tiff")])
def test_formats_decode_to_bgr_pages(fmt, kind):
    data = encode(PAGE, fmt)
    assert sniff(data) == kind and is_supported(data)
    pages = pages_of(data)
    assert len(pages) == 1
    assert pages[0].shape == (PAGE.height, PAGE.width, 3) and pages[0].dtype == np.uint8
    assert dark_text_on_light(pages[0])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_modes_become_8bit_bgr(mode):
    if mode == "I;16":
        image = Image.fromarray(np.asarray(PAGE.convert("L"), np.uint16) * 257)
        data = encode(image, "PNG")
    else:
        data = encode(PAGE.convert(mode), "JPEG" if mode == "CMYK" else "PNG")
    page = pages_of(data)[0]
    assert page.shape == (PAGE.height, PAGE.width, 3) and page.dtype == np.uint8
    assert dark_text_on_light(page), mode


def test_exif_orientation_is_applied():
    rotated = PAGE.rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 8  # ...with "rotate 90 CW to view" (EXIF 2.3, tag 274 Orientation)
    page = pages_of(encode(rotated, "JPEG", exif=exif))[0]
    assert page.shape[:2] == (PAGE.height, PAGE.width)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_every_frame_of_an_animated_image_is_a_page(fmt):
    """The frame policy (decode.py's docstring; the exporter follows it): GIF, WebP and APNG
    frames are pages, in order, composited onto white, like the frames of a TIFF."""
    first, second = PAGE.convert("RGB"), PAGE.rotate(180).convert("RGB")
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    first.save(buf, fmt, save_all=True, append_images=[second], duration=100, loop=0, **options)
    with open_document(buf.getvalue(), BUDGET) as document:
        assert document.animated and document.page_sizes == [PAGE.size] * 2
        pages = list(document.pages())
    for page, frame in zip(pages, (first, second)):
        assert (np.abs(page.astype(int) - np.asarray(frame)[:, :, ::-1]) < 16).mean() > 0.95


def test_a_transparent_frame_is_on_white_and_frames_count_against_the_budget():
    frames = [Image.new("RGBA", (64, 32), (0, 0, 0, 0)), Image.new("RGBA", (64, 32), (0, 0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    pages = pages_of(buf.getvalue())
    assert pages[0].min() == 255 and pages[1].max() == 0
    with pytest.raises(DocumentTooLargeError, match="2 frames; the limit is 1"):
        open_document(buf.getvalue(), Budget(max_pages=1))
    with pytest.raises(DocumentTooLargeError, match="webp frame 2"):
        open_document(buf.getvalue(), Budget(max_document_pixels=64 * 32 + 1))


def test_a_one_frame_gif_is_one_page():
    buf = io.BytesIO()
    PAGE.convert("P").save(buf, "GIF")
    with open_document(buf.getvalue(), BUDGET) as document:
        assert not document.animated and len(document) == 1


def test_pages_are_decoded_one_at_a_time():
    buf = io.BytesIO()
    PAGE.save(buf, "TIFF", save_all=True, append_images=[PAGE.rotate(180), PAGE])
    pages = decode_pages(buf.getvalue(), BUDGET)
    assert not isinstance(pages, list)  # a generator...
    first = next(pages)
    assert dark_text_on_light(first)
    assert len(list(pages)) == 2  # ...that goes on with the rest


def test_multipage_tiff_gives_every_page_and_is_limited():
    buf = io.BytesIO()
    PAGE.save(buf, "TIFF", save_all=True, append_images=[PAGE.rotate(180), PAGE])
    assert len(pages_of(buf.getvalue())) == 3
    with pytest.raises(DocumentTooLargeError, match="more than 2 frames"):
        open_document(buf.getvalue(), Budget(max_pages=2))


def test_tiff_with_1000_frames_is_refused_from_its_headers():
    data = tiff([(2, 2)] * 1000)
    assert len(data) < 150_000
    assert len(open_document(tiff([(2, 2)] * 200), Budget())) == 200  # the limit itself is fine
    with pytest.raises(DocumentTooLargeError, match="more than 200 frames"):
        open_document(data, Budget())


def test_every_tiff_frame_is_checked_not_only_the_first():
    frames = [(2, 2)] * 149 + [(20_000, 20_000)]  # frame 150 claims 400 Mpx (deflate strips can be tiny)
    with pytest.raises(DocumentTooLargeError, match="TIFF frame 150 is 20000x20000"):
        open_document(tiff(frames, compression=8), Budget())
    frames = [(8000, 8000)] * 7  # 64 Mpx each: every frame fits, all seven do not
    with pytest.raises(DocumentTooLargeError, match="448000000 pixels up to TIFF frame 7"):
        open_document(tiff(frames, compression=8), Budget(max_document_pixels=400_000_000))


def test_pdf_pages_are_rendered_at_the_configured_dpi_and_limited():
    data = pdf_of([PAGE, PAGE])
    pages = pages_of(data, Budget(max_page_pixels=10**8, pdf_dpi=144))
    assert len(pages) == 2
    assert pages[0].shape == (PAGE.height * 2, PAGE.width * 2, 3)  # 144 dpi = 2x the 72-dpi page
    assert dark_text_on_light(pages[0])
    with pytest.raises(DocumentTooLargeError, match="2 pages"):
        open_document(data, Budget(max_pages=1))
    with pytest.raises(DocumentTooLargeError, match="PDF page 1 at 144 dpi"):
        open_document(data, Budget(max_page_pixels=1000, pdf_dpi=144))


def test_pdf_of_many_large_pages_is_refused_on_total_pixels_without_rendering(monkeypatch):
    rendered = []
    monkeypatch.setattr(pdfium.PdfPage, "render", lambda *a, **k: rendered.append(1))
    big = Image.new("1", (400, 500), 1)  # at resolution 10: 40 x 50 inch, 80 Mpx at 200 dpi
    data = pdf_of([big] * 60, resolution=10)
    assert len(data) < 100_000
    with pytest.raises(DocumentTooLargeError, match="up to PDF page 6 at 200 dpi"):
        open_document(data, Budget(max_document_pixels=400_000_000))  # 5 pages = 400 Mpx, the 6th is over
    assert rendered == []
    with open_document(data[: len(data)], Budget(max_document_pixels=10**12, max_pages=60)) as document:
        assert len(document) == 60 and document.page_sizes[0] == (8000, 10000)
    assert rendered == []


# -- what the formats allow -------------------------------------------------------------------
def test_jpeg_with_trailing_bytes_is_valid():
    jpeg = encode(PAGE, "JPEG")
    for data in (jpeg + b"\x00" * 4096, jpeg + zip_bytes(), jpeg + b"\xff\xd8\xff\xe0garbage"):
        page = pages_of(data)[0]
        assert page.shape == (PAGE.height, PAGE.width, 3) and dark_text_on_light(page)


def test_jpeg_zip_polyglot_is_a_jpeg_but_zip_first_is_not():
    polyglot = encode(PAGE, "JPEG") + zip_bytes()
    assert zipfile.ZipFile(io.BytesIO(polyglot)).namelist() == ["notes.txt"]  # really both
    assert sniff(polyglot) == "jpeg" and len(pages_of(polyglot)) == 1
    with pytest.raises(NotAnImageError, match="zip"):
        open_document(zip_bytes() + encode(PAGE, "JPEG"))


def test_png_with_trailing_bytes_is_valid():
    assert len(pages_of(encode(PAGE, "PNG") + b"trailing")) == 1


def test_pdf_with_an_owner_password_only_opens():
    import pikepdf

    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf_of([PAGE]))) as pdf:
        pdf.save(out, encryption=pikepdf.Encryption(user="", owner="owner-secret"))
    assert dark_text_on_light(pages_of(out.getvalue())[0])


# -- what cannot be a page ---------------------------------------------------------------------
def lying_jpeg(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) is patched to claim ``width x height``."""
    data = bytearray(encode(Image.new("L", (16, 16), 128), "JPEG", quality=75))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_jpeg_header_that_lies_about_its_size_is_corrupt():
    data = lying_jpeg(10_000, 11_000)
    assert len(data) < 1000
    with pytest.raises(CorruptImageError, match="10000x11000.*header lies"):
        open_document(data)
    with pytest.raises(CorruptImageError, match="header lies"):
        open_document(lying_jpeg(1000, 1000), BUDGET)  # within every size limit, still a lie


def test_large_uniform_jpeg_is_not_taken_for_a_liar():
    buf = io.BytesIO()
    Image.new("L", (8000, 8000), 255).save(buf, "JPEG", optimize=True, quality=75)  # ~2 bits per block
    assert open_document(buf.getvalue()).page_sizes == [(8000, 8000)]


def test_png_header_that_lies_about_its_size_is_corrupt():
    data = bytearray(encode(Image.new("L", (16, 16), 128), "PNG"))
    data[16:24] = struct.pack(">II", 5000, 5000)  # IHDR width/height (CRC is not our check)
    with pytest.raises(CorruptImageError, match="5000x5000.*1032:1"):
        open_document(bytes(data))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "PDF", "WEBP"])
def test_truncated(fmt):
    data = pdf_of([PAGE]) if fmt == "PDF" else encode(PAGE, fmt)
    with pytest.raises(TruncatedImageError):
        open_document(data[: len(data) // 2], BUDGET)


def test_truncated_tiff_strip():
    buf = io.BytesIO()
    PAGE.save(buf, "TIFF", save_all=True, append_images=[PAGE])
    with pytest.raises(TruncatedImageError, match="frame 2"):
        open_document(buf.getvalue()[:-100])


def test_encrypted_pdf():
    import pikepdf

    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf_of([PAGE]))) as pdf:
        pdf.save(out, encryption=pikepdf.Encryption(user="user-secret", owner="owner-secret"))
    with pytest.raises(EncryptedDocumentError, match="password"):
        open_document(out.getvalue())


@pytest.mark.parametrize("data,error", [
    (b"", EmptyDocumentError),
    (b"hello, not an image", NotAnImageError),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, CorruptImageError),
    (b"%PDF-1.7\nnot really a pdf", CorruptImageError),
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n" + b"x" * 900 + b"\n%%EOF\n", CorruptImageError),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9", CorruptImageError),
])
def test_not_an_image_or_corrupt(data, error):
    with pytest.raises(error):
        open_document(data, BUDGET)


@pytest.mark.parametrize("data,kind", [
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heic"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "avif"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "svg"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "svg"),
    (zip_bytes(), "zip"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"just some text\n", "text"),
])
def test_unsupported_formats_are_named(data, kind):
    assert identify(data) == kind and sniff(data) is None and not is_supported(data)
    with pytest.raises(NotAnImageError, match=f"looks like: {kind}"):
        open_document(data)


def test_pixel_bombs_fail_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(buf, "PNG")  # 900 Mpx in ~110 KB
    with pytest.raises(DocumentTooLargeError, match="900000000 pixels"):
        open_document(buf.getvalue(), Budget())
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 Mpx: under Pillow's guard, over ours
    with pytest.raises(DocumentTooLargeError, match="12000x12000"):
        open_document(buf.getvalue(), Budget())


# -- the isolated worker -------------------------------------------------------------------------
async def decode_in(pool: DecoderPool, data: bytes, template=None) -> list:
    async with pool.open(data) as document:
        return [await document.page(i, template) for i in range(len(document.page_sizes))]


@pytest.fixture(scope="module")
def detecting_pool():
    pool = DecoderPool(WorkerConfig(budget=Budget()), timeout_s=120)
    asyncio.run(pool.start())
    yield pool
    pool.close()


@pytest.mark.slow
async def test_worker_detects_lines_and_returns_one_crop_pack(detecting_pool):
    from ocrstream.storage.crops import unpack_crops

    [page] = await decode_in(detecting_pool, encode(render_page(["TOTAL 12.50", "CASH 20.00"], size=28), "PNG"))
    assert len(page.regions) == 2
    region = page.regions[0]
    assert region["order"] == 0 and len(region["quad"]) == 4
    crops = unpack_crops(page.crops, [(r["crop_offset"], tuple(r["crop_shape"])) for r in page.regions])
    assert [c.shape[:2] for c in crops] == [tuple(r["crop_shape"]) for r in page.regions]
    assert all(c.shape[1] > 3 * c.shape[0] and c.min() < 100 for c in crops)  # a text line: wide, with ink
    with pytest.raises(TruncatedImageError):  # typed errors cross back unchanged
        await decode_in(detecting_pool, encode(PAGE, "JPEG")[:300])


@pytest.fixture(scope="module")
def template_pool():
    """Workers without the detector (template documents only), limited to 750 MiB of address space:
    ~590 MiB once the libraries are imported, so a 79 Mpx page (238 MB as BGR) cannot fit."""
    pool = DecoderPool(WorkerConfig(load_detector=False, memory_bytes=750 * 2**20), timeout_s=60)
    yield pool
    pool.close()


@pytest.mark.slow
async def test_worker_cuts_template_regions_page_by_page(template_pool):
    form = render_form(LAB_TITLE, LAB_FIELDS)
    data = pdf_of([form, form])
    pages = await decode_in(template_pool, data, get_template("lab-report"))
    assert [(p.width, p.height) for p in pages] == open_document(data).page_sizes == [(2500, 1556)] * 2
    assert len(pages[0].regions) == len(LAB_FIELDS) and pages[1].regions == []  # the template names page 0 only


def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a crashing codec would


def _allocate(n_bytes: int) -> int:
    return len(bytearray(n_bytes))


@pytest.mark.slow
async def test_memory_bomb_and_crash_fail_one_document_and_the_next_decodes(template_pool):
    template = get_template("lab-report")
    good = encode(render_form(LAB_TITLE, LAB_FIELDS), "PNG")
    buf = io.BytesIO()
    Image.new("1", (9000, 8800), 1).save(buf, "PNG")  # 79 Mpx: within the pixel budget, not the memory limit
    with pytest.raises(DecoderCrashedError, match="out of memory while decoding page 1"):
        await decode_in(template_pool, buf.getvalue(), template)
    assert len((await decode_in(template_pool, good, template))[0].regions) == len(LAB_FIELDS)
    with pytest.raises(DecoderCrashedError, match="out of memory while allocating"):
        await template_pool.run("allocating", _allocate, 4 * 2**30)
    with pytest.raises(DecoderCrashedError, match="died while decoding page 1 .killed by SIGSEGV"):
        await template_pool.run("decoding page 1", _segfault)
    assert len((await decode_in(template_pool, good, template))[0].regions) == len(LAB_FIELDS)


@pytest.mark.slow
async def test_timeout_stops_the_worker_and_the_next_document_decodes():
    pool = DecoderPool(WorkerConfig(load_detector=False), timeout_s=0.5)
    try:
        with pytest.raises(DecoderCrashedError, match=r"took longer than 0.5 s .*stopped"):
            await pool.run("decoding page 1", __import__("time").sleep, 30)
        good = encode(render_form(LAB_TITLE, LAB_FIELDS), "PNG")
        pool.timeout_s = 60
        assert len((await decode_in(pool, good, get_template("lab-report")))[0].regions) == len(LAB_FIELDS)
    finally:
        pool.close()


@pytest.mark.slow
async def test_worker_that_cannot_start_fails_start_up_clearly():
    pool = DecoderPool(WorkerConfig(device="cuda"), timeout_s=60)  # no GPU here: the detector cannot load
    try:
        with pytest.raises(ConfigurationError, match="decoder worker could not start"):
            await pool.start(timeout_s=120)
    finally:
        pool.close()


def test_transparent_background_becomes_white_paper():
    """Black text on a transparent PNG: OpenCV's colour decode alone would make the page black."""
    from PIL import ImageDraw

    im = Image.new("RGBA", (200, 60), (0, 0, 0, 0))
    ImageDraw.Draw(im).rectangle((20, 20, 60, 40), fill=(0, 0, 0, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with open_document(buf.getvalue(), Budget()) as document:
        page = next(iter(document.pages()))
    assert page.shape == (60, 200, 3)
    assert (page[0, 0] == 255).all() and (page[30, 40] == 0).all()


def _address_space_of_threads(n: int) -> int:
    """Task: address space (bytes) that ``n`` live threads add to the worker, each having
    malloc'ed 100 kB (below glibc's mmap threshold: from the thread's malloc arena)."""
    import threading

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    allocated, done = threading.Barrier(n + 1), threading.Event()

    def hold() -> None:
        block = libc.malloc(100_000)
        allocated.wait()
        done.wait()
        libc.free(block)

    def size() -> int:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmSize:")).split()[1]) * 1024

    before = size()
    threads = [threading.Thread(target=hold) for _ in range(n)]
    for thread in threads:
        thread.start()
    allocated.wait()
    grown = size() - before
    done.set()
    for thread in threads:
        thread.join()
    return grown


@pytest.mark.slow
async def test_decoder_worker_threads_share_two_malloc_arenas():
    """Issue 24's soak lost an ordinary receipt to the decoder's 2 GiB ``RLIMIT_AS``: glibc gives each
    thread that allocates a malloc arena of its own (up to 8 per core), and each arena reserves
    64 MiB of address space. The worker caps them at 2 (``WorkerConfig.malloc_arenas``); compared with
    glibc's default in the same run, 8 threads that allocate."""
    grown = {}
    for arenas in (0, 2):
        pool = DecoderPool(WorkerConfig(load_detector=False, malloc_arenas=arenas), timeout_s=60)
        try:
            grown[arenas] = await pool.run("probing", _address_space_of_threads, 8)
        finally:
            pool.close()
    print(f"\naddress space of 8 allocating threads: glibc's default {grown[0] / 2**20:.0f} MiB, "
          f"2 arenas {grown[2] / 2**20:.0f} MiB")
    assert grown[2] + 4 * 64 * 2**20 < grown[0], grown  # 8 stacks alike; >= 5 arenas of 64 MiB fewer
    assert grown[2] <= 8 * 9 * 2**20 + 64 * 2**20, grown  # the stacks (8 MiB + guard), at most one more arena


async def test_decoder_workers_run_opencv_on_the_threads_they_are_given():
    import cv2

    found = {}
    for threads in (1, 0):
        pool = DecoderPool(WorkerConfig(load_detector=False, opencv_threads=threads), timeout_s=60)
        try:
            found[threads] = await pool.run("probing", cv2.getNumThreads)
        finally:
            pool.close()
    assert found[1] == 1
    assert found[0] == cv2.getNumberOfCPUs()  # 0: OpenCV's default, one per core


def _address_space_peak() -> int:
    """Task: this worker's peak address space (``VmPeak``, what ``RLIMIT_AS`` bounds), bytes."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmPeak:"))
    return int(line.split()[1]) * 1024


@pytest.mark.slow
async def test_ordinary_pages_stay_well_under_the_decoders_address_space_limit():
    """The sample pages and an 8-page PDF of them leave a quarter of the decoder's address-space
    limit free (issue 24's soak lost an ordinary receipt to it; glibc's arenas are capped now)."""
    from pathlib import Path

    samples = Path(__file__).resolve().parents[2] / "samples"
    names = ("receipt.png", "lab-report.jpg", "letter-skewed.png")
    documents = [(samples / name).read_bytes() for name in (*names, "memo.pdf")]
    documents.append(pdf_of([Image.open(samples / name).convert("RGB") for name in names] * 3, resolution=150))
    pool = DecoderPool(WorkerConfig(budget=Budget()), timeout_s=120)
    try:
        for data in documents:
            assert await decode_in(pool, data)
        peak = await pool.run("probing", _address_space_peak)
    finally:
        pool.close()
    limit = WorkerConfig().memory_bytes
    print(f"\nworker peak address space {peak / 2**20:.0f} MiB, limit {limit / 2**20:.0f} MiB")
    assert peak <= 0.75 * limit

"""The crop pack: all line crops of one page in ONE object, raw pixels, no PNG (claim check).

preprocess writes one object per page (:func:`pack_crops`, in its decoder worker) and the
``ocr.regions.v1`` event carries, per region, the page object's key (``crop_key``), the byte
offset of its crop in the unpacked payload (``crop_offset``) and its shape (``crop_shape`` =
``[height, width]``, 3 channels uint8 BGR, C order); recognize GETs the page object once and
cuts every region's crop out of it (:func:`unpack_crops`). Measured by ``bench/bench_e2e.py``:
before, preprocess PNG-encoded ~55 crops per SROIE page and PUT each as its own object, and
recognize GOT and decoded each one again.

Object layout: ``MAGIC`` (8 bytes), one codec byte (``0`` raw, ``1`` zlib), then the payload:
the crops' pixels concatenated (each ``h * w * 3`` bytes). zlib level 1 (the fastest level)
is optional (``OCRSTREAM_CROP_CODEC``). Bounded: a pack larger than ``max_bytes`` unpacked is
refused on both sides (:class:`DocumentTooLargeError` when packing, :class:`TruncatedImageError`
when unpacking), and decompression stops at the size the event's offsets and shapes require,
so a decompression bomb costs nothing. A stored crop reference for one region (the database's
``regions.crop_key`` column, read by the training label export) is ``key#offset,h,w``
(:func:`stored_crop`, :func:`parse_reference`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from ocrstream.contracts.event_models import UNSET, Region
from ocrstream.errors import DocumentTooLargeError, TruncatedImageError

__all__ = ["MAGIC", "CropSpan", "crop_reference", "decode_png", "pack_crops", "page_crops_key", "parse_reference",
           "region_crops", "stored_crop", "unpack_crops"]

MAGIC = b"OCRCROP1"
_CODECS = {"none": 0, "zlib": 1}
Codec = Literal["none", "zlib"]
#: zlib level 1: the fastest level; line crops (mostly paper white) shrink ~3-5x.
ZLIB_LEVEL = 1

CropSpan = tuple[int, tuple[int, int]]  # (byte offset in the unpacked payload, (height, width))


def page_crops_key(document_id: str, page_index: int) -> str:
    """Object key of a page's crop pack."""
    return f"crops/{document_id}/p{page_index:04d}.crops"


def _bgr(crop: np.ndarray) -> np.ndarray:
    """``crop`` as C-contiguous ``(h, w, 3)`` uint8 BGR (a gray or BGRA crop converted)."""
    if crop.ndim == 2:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
    elif crop.shape[2] == 4:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(crop, dtype=np.uint8)


def pack_crops(crops: Sequence[np.ndarray], *, codec: Codec = "none",
               max_bytes: int = 128 * 1024**2) -> tuple[bytes, list[CropSpan]]:
    """One object holding ``crops`` (each ``(h, w)`` gray or ``(h, w, 3|4)`` uint8).

    Returns:
        the object's bytes and, per crop, ``(offset, (h, w))`` in the unpacked payload.

    Raises:
        DocumentTooLargeError: the crops hold more than ``max_bytes`` pixel bytes.
        ValueError: unknown ``codec`` or an empty crop.
    """
    if codec not in _CODECS:
        raise ValueError(f"crop codec must be one of {sorted(_CODECS)}, got {codec!r}")
    arrays = [_bgr(c) for c in crops]
    spans, offset = [], 0
    for a in arrays:
        if a.size == 0:
            raise ValueError(f"empty crop of shape {a.shape}")
        spans.append((offset, (int(a.shape[0]), int(a.shape[1]))))
        offset += a.nbytes
    if offset > max_bytes:
        raise DocumentTooLargeError(f"a page's crops hold {offset} bytes; the limit is {max_bytes} "
                                    "(OCRSTREAM_MAX_PAGE_CROP_BYTES)")
    payload = b"".join(a.data for a in arrays)
    if codec == "zlib":
        payload = zlib.compress(payload, ZLIB_LEVEL)
    return MAGIC + bytes([_CODECS[codec]]) + payload, spans


def unpack_crops(data: bytes, spans: Sequence[CropSpan], *, max_bytes: int = 128 * 1024**2) -> list[np.ndarray]:
    """The crops at ``spans`` (``(offset, (h, w))``) of a pack: read-only ``(h, w, 3)`` uint8 views.

    Raises:
        TruncatedImageError: not a crop pack, an unknown codec, corrupt compressed data, a payload
            shorter than the spans need, spans beyond ``max_bytes`` or with non-positive sizes.
    """
    if not data.startswith(MAGIC) or len(data) <= len(MAGIC):
        raise TruncatedImageError("stored crops are not a crop pack (bad magic)")
    need = 0
    for offset, (h, w) in spans:
        if offset < 0 or h < 1 or w < 1:
            raise TruncatedImageError(f"bad crop span: offset {offset}, shape {h}x{w}")
        need = max(need, offset + h * w * 3)
    if need > max_bytes:
        raise TruncatedImageError(f"crop spans need {need} bytes; the limit is {max_bytes} "
                                  "(OCRSTREAM_MAX_PAGE_CROP_BYTES)")
    codec, body = data[len(MAGIC)], memoryview(data)[len(MAGIC) + 1:]
    if codec == _CODECS["zlib"]:
        try:
            body = memoryview(zlib.decompressobj().decompress(body, need))  # never more than needed
        except zlib.error as exc:
            raise TruncatedImageError(f"stored crop pack is corrupt: {exc}") from None
    elif codec != _CODECS["none"]:
        raise TruncatedImageError(f"stored crop pack has an unknown codec {codec}")
    if len(body) < need:
        raise TruncatedImageError(f"stored crop pack holds {len(body)} bytes of pixels; its regions need {need}")
    pixels = np.frombuffer(body, np.uint8)
    return [pixels[offset:offset + h * w * 3].reshape(h, w, 3) for offset, (h, w) in spans]


def decode_png(data: bytes) -> np.ndarray:
    """``(h, w, 3)`` uint8 BGR of a crop stored as its own PNG object (events written before the
    crop pack: no ``crop_offset``); raises TruncatedImageError if undecodable."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise TruncatedImageError("stored crop is not a decodable PNG")
    return image


def region_crops(regions: Sequence[Region], objects: dict[str, bytes], *,
                 max_bytes: int = 128 * 1024**2) -> list[np.ndarray]:
    """One ``(h, w, 3)`` uint8 crop per event region, in order, from the downloaded objects
    (``crop_key`` -> bytes): cut from its page's crop pack (``crop_offset``, ``crop_shape``), or
    decoded from its own PNG object (an older event without them).

    Raises:
        TruncatedImageError: a corrupt pack or PNG (see :func:`unpack_crops`).
    """
    crops: list[np.ndarray | None] = [None] * len(regions)
    by_key: dict[str, list[int]] = {}
    for i, region in enumerate(regions):
        if region.crop_offset is not UNSET:
            by_key.setdefault(region.crop_key, []).append(i)
        else:
            crops[i] = decode_png(objects[region.crop_key])
    for key, mine in by_key.items():
        spans = [(_offset(regions[i]), _shape(regions[i])) for i in mine]
        for i, crop in zip(mine, unpack_crops(objects[key], spans, max_bytes=max_bytes)):
            crops[i] = crop
    filled = [crop for crop in crops if crop is not None]
    assert len(filled) == len(regions), "every region gets its crop from its PNG or its pack"
    return filled


def crop_reference(key: str, offset: int, shape: Sequence[int]) -> str:
    """One region's crop as a single string ``key#offset,h,w`` (what the database stores)."""
    return f"{key}#{offset},{shape[0]},{shape[1]}"


def _offset(region: Region) -> int:
    assert region.crop_offset is not UNSET
    return region.crop_offset


def _shape(region: Region) -> tuple[int, int]:
    assert region.crop_shape is not UNSET
    height, width = region.crop_shape
    return height, width


def stored_crop(region: Region) -> str | None:
    """What the database stores for an event region's crop: its crop reference (``crop_key`` with
    ``crop_offset`` and ``crop_shape``), the plain ``crop_key`` of an older event, or None."""
    if region.crop_key and region.crop_offset is not UNSET:
        return crop_reference(region.crop_key, _offset(region), _shape(region))
    return region.crop_key or None


def parse_reference(reference: str) -> tuple[str, CropSpan | None]:
    """``(key, (offset, (h, w)))`` of a crop reference; ``(key, None)`` for a plain object key
    (a crop stored as its own PNG by an older version).

    Raises:
        ValueError: a ``#`` part that is not ``offset,h,w``.
    """
    key, sep, span = reference.rpartition("#")
    if not sep:
        return reference, None
    offset, h, w = (int(v) for v in span.split(","))
    return key, (offset, (h, w))

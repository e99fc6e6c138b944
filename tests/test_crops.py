"""The crop pack (ocrstream/storage/crops.py): one object per page, raw pixels, bounded; and the
recognize stage reading it from the real embedded S3 — a corrupt or missing pack is a typed
error (TruncatedImageError / MissingObjectError: dead letter), never a crash or a wrong crop."""

from __future__ import annotations

import json
import uuid
import zlib

import numpy as np
import pytest
from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.contracts.event_models import Region
from ocrstream.errors import DocumentTooLargeError, InvalidEventError, MissingObjectError, TruncatedImageError
from ocrstream.storage.crops import MAGIC, crop_reference, pack_crops, page_crops_key, parse_reference, stored_crop, unpack_crops


def crops_of(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(32, 200, 3), (48, 31, 3), (1, 1, 3), (20, 7)]  # the last one gray
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]


@pytest.mark.parametrize("codec", ["none", "zlib"])
def test_pack_round_trips_every_pixel(codec):
    crops = crops_of()
    data, spans = pack_crops(crops, codec=codec)
    assert data.startswith(MAGIC) and [s for _, s in spans] == [(32, 200), (48, 31), (1, 1), (20, 7)]
    back = unpack_crops(data, spans)
    for original, got in zip(crops, back):
        expected = np.repeat(original[..., None], 3, axis=2) if original.ndim == 2 else original
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.array_equal(got, expected)
    # any subset, any order: what one region of the page needs
    assert np.array_equal(unpack_crops(data, [spans[1]])[0], crops[1])


def test_template_slices_are_packed_contiguously():
    page = np.arange(100 * 80 * 3, dtype=np.uint32).astype(np.uint8).reshape(100, 80, 3)
    view = page[10:30, 5:45]  # not C-contiguous
    data, spans = pack_crops([view])
    assert np.array_equal(unpack_crops(data, spans)[0], view)


def test_zlib_pack_is_smaller_on_paper_white_crops():
    crops = [np.full((40, 400, 3), 250, np.uint8)] * 5
    raw, _ = pack_crops(crops, codec="none")
    small, spans = pack_crops(crops, codec="zlib")
    assert len(raw) == len(MAGIC) + 1 + 5 * 40 * 400 * 3 and len(small) < len(raw) // 50
    assert np.array_equal(unpack_crops(small, spans)[4], crops[4])


def test_the_pack_is_bounded():
    with pytest.raises(DocumentTooLargeError, match="OCRSTREAM_MAX_PAGE_CROP_BYTES"):
        pack_crops([np.zeros((100, 100, 3), np.uint8)] * 2, max_bytes=50_000)
    with pytest.raises(ValueError, match="codec"):
        pack_crops(crops_of(), codec="png")
    with pytest.raises(ValueError, match="empty crop"):
        pack_crops([np.zeros((0, 5, 3), np.uint8)])


@pytest.mark.parametrize("case", ["not a pack", "truncated raw", "truncated zlib", "garbage zlib", "unknown codec",
                                  "span beyond the limit", "bad span"])
def test_corrupt_packs_are_typed_errors(case):
    crops = crops_of()
    raw, spans = pack_crops(crops)
    packed, _ = pack_crops(crops, codec="zlib")
    data = {"not a pack": b"\x89PNG\r\n\x1a\n" + raw[9:], "truncated raw": raw[:-10], "truncated zlib": packed[:40],
            "garbage zlib": MAGIC + b"\x01" + b"\x00" * 100, "unknown codec": MAGIC + b"\x07" + raw[9:],
            "span beyond the limit": raw, "bad span": raw}[case]
    if case == "bad span":
        spans = [(0, (0, 5))]
    limit = 1000 if case == "span beyond the limit" else 256 * 1024**2
    with pytest.raises(TruncatedImageError):
        unpack_crops(data, spans, max_bytes=limit)


def test_a_decompression_bomb_is_cut_at_what_the_spans_need():
    bomb = MAGIC + b"\x01" + zlib.compress(b"\x00" * 200_000_000, 1)  # 200 MB of zeros in ~200 kB
    crop = unpack_crops(bomb, [(0, (10, 10))])[0]
    assert crop.shape == (10, 10, 3) and not crop.any()


def a_region(**crop) -> Region:
    return events.convert(Region, {"region_id": "p2-r0", "page_index": 2, "line_index": 0, "order": 0,
                                   "box": [0, 0, 16, 20], **crop})


def test_crop_references_name_one_crop_of_a_pack():
    region = a_region(crop_key=page_crops_key("doc", 2), crop_offset=960, crop_shape=[20, 16])
    ref = stored_crop(region)
    assert ref == crop_reference("crops/doc/p0002.crops", 960, (20, 16)) == "crops/doc/p0002.crops#960,20,16"
    assert parse_reference(ref) == ("crops/doc/p0002.crops", (960, (20, 16)))
    assert parse_reference("crops/doc/p0000/r00001.png") == ("crops/doc/p0000/r00001.png", None)  # older PNG object
    assert stored_crop(a_region(crop_key="crops/old.png")) == "crops/old.png"
    assert stored_crop(a_region(crop_key="")) is None


# ---------------------------------------------------------------------------------------------
# The recognize stage against the real embedded S3
# ---------------------------------------------------------------------------------------------
def regions_record(doc_id: str, key: str, spans) -> ConsumerRecord:
    regions = [{"region_id": f"p0-r{i}", "page_index": 0, "line_index": i, "order": i, "box": [0, 0, w, h],
                "crop_key": key, "crop_offset": offset, "crop_shape": [h, w]} for i, (offset, (h, w)) in enumerate(spans)]
    event = {"schema": events.REGIONS, "document_id": doc_id,
             "document": {"object_key": f"originals/{doc_id}", "content_sha256": "0" * 64, "size_bytes": 1,
                          "source": "cli"},
             "timestamps": {"ingested": events.now_iso()}, "pages": [{"page_index": 0, "width": 500, "height": 500}],
             "regions": regions}
    return record_of(json.dumps(event).encode())


def record_of(value: bytes) -> ConsumerRecord:
    return ConsumerRecord(events.REGIONS, 0, 0, 0, 0, b"doc", value, None, 0, len(value), [])


async def test_recognize_loads_one_pack_per_page_and_fails_typed_on_corrupt_or_missing(stack_settings):
    from ocrstream.storage.objectstore import ObjectStore
    from services.recognize.stage import RecognizeStage

    stage = RecognizeStage(stack_settings)
    stage.store = ObjectStore(stack_settings)
    await stage.store.ensure_bucket()
    crops = crops_of(1)[:3]
    good, bad, gone = (uuid.uuid4().hex for _ in range(3))
    data, spans = pack_crops(crops, codec="zlib")
    await stage.store.put(page_crops_key(good, 0), data)
    await stage.store.put(page_crops_key(bad, 0), data[: len(data) // 2])

    event, loaded = await stage.load(regions_record(good, page_crops_key(good, 0), spans))
    assert [r.region_id for r in event.regions] == ["p0-r0", "p0-r1", "p0-r2"]
    assert all(np.array_equal(a, b) for a, b in zip(loaded, crops))
    with pytest.raises(TruncatedImageError):
        await stage.load(regions_record(bad, page_crops_key(bad, 0), spans))
    with pytest.raises(MissingObjectError):
        await stage.load(regions_record(gone, page_crops_key(gone, 0), spans))


async def test_recognize_still_reads_an_older_event_with_one_png_per_region(stack_settings):
    """Events written before the crop pack (no crop_offset/crop_shape; v1 changes are additive)."""
    import cv2

    from ocrstream.storage.objectstore import ObjectStore
    from services.recognize.stage import RecognizeStage

    stage = RecognizeStage(stack_settings)
    stage.store = ObjectStore(stack_settings)
    await stage.store.ensure_bucket()
    doc = uuid.uuid4().hex
    crop = crops_of(2)[0]
    await stage.store.put(f"crops/{doc}/p0000/r00000.png", cv2.imencode(".png", crop)[1].tobytes(), "image/png")
    await stage.store.put(f"crops/{doc}/p0000/r00001.png", b"\x89PNG\r\n\x1a\n broken")
    record = regions_record(doc, f"crops/{doc}/p0000/r00000.png", [(0, crop.shape[:2])])
    event = json.loads(record.value)
    for region in event["regions"]:
        del region["crop_offset"], region["crop_shape"]
    _, loaded = await stage.load(record_of(json.dumps(event).encode()))
    assert np.array_equal(loaded[0], crop)
    event["regions"][0]["crop_key"] = f"crops/{doc}/p0000/r00001.png"
    with pytest.raises(TruncatedImageError, match="PNG"):
        await stage.load(record_of(json.dumps(event).encode()))
    event["regions"][0]["crop_offset"] = 0  # half a span: the schema refuses it
    with pytest.raises(InvalidEventError):
        await stage.load(record_of(json.dumps(event).encode()))

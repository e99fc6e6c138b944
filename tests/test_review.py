"""The review API (services/store/review.py, ocrstream/storage/review.py) on the real embedded
PostgreSQL and object store: the queue and its filters, verifying with history, crops cut from
the original page, every bound crossed, and bad input answered 4xx with a typed error."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from ocrstream.storage.db import create_read_pool, create_review_pool
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.storage.review import MAX_REVIEW_PAGE, marked_reading
from ocrstream.streaming.auth import Authenticator, create_key
from services.store.api import MAX_BODY_BYTES, create_app
from services.store.review import COOKIE
from services.store.stage import StoreStage
from tests.review_data import LINES, PAGE_H, PAGE_W, store_review_documents

pytestmark = pytest.mark.slow

HISTORY_MAX = 2
MAX_TEXT = 40
CROP_MAX_PIXELS = 20_000
MARGIN = 6


@pytest.fixture(scope="module")
async def review_api(stack_settings, tmp_path_factory):
    """The query API with the review routes on the real stack: ``(client, keys, tag, ids, pools)``."""
    keys_file = tmp_path_factory.mktemp("keys") / "keys.jsonl"
    keys = {"reviewer": create_key(keys_file, "alice", ("review",)),
            "reader": create_key(keys_file, "bob", ("query",))}
    settings = stack_settings.model_copy(update={
        "api_keys_file": str(keys_file), "review_history_max": HISTORY_MAX, "review_max_text_chars": MAX_TEXT,
        "review_crop_max_pixels": CROP_MAX_PIXELS, "review_crop_margin_px": MARGIN, "rate_limit_per_minute": 0})
    stage = StoreStage(settings)
    await stage.setup()
    store = ObjectStore(settings)
    await store.ensure_bucket()
    tag, ids = await store_review_documents(stage, store, 3, whole_page_region=True)
    read, write = await create_read_pool(settings), await create_review_pool(settings)
    app = create_app(read, Authenticator(settings, "127.0.0.1"), store, settings, write)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        client.write_pool = write  # type: ignore[attr-defined]  (for the grants test)
        yield client, keys, tag, ids, stage.pool
    await read.close()
    await write.close()
    await stage.teardown()


def bearer(keys, who="reviewer") -> dict:
    return {"Authorization": f"Bearer {keys[who]}"}


async def queue(client, keys, **params) -> dict:
    response = await client.get("/v1/review", params=params, headers=bearer(keys))
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_queue_lists_flagged_regions_oldest_first_with_marked_readings(review_api):
    client, keys, tag, ids, _ = review_api
    page = await queue(client, keys, template=tag)
    flagged = sum(1 for _, c in LINES if c < 0.98) + 1  # + the whole-page region (0.5)
    assert page["total"] == 3 * flagged and page["next_offset"] is None
    assert [item["document_id"] for item in page["items"]] == [d for d in ids for _ in range(flagged)]
    first = page["items"][0]
    assert first["raw_text"] == "#OTAL RM 12.50" and first["box"][0] == 26.0
    assert first["reading"] == [{"text": "#", "low": True}, {"text": "OTAL RM 12.50", "low": False}]
    # a threshold over the confident line's 0.999 adds it; the document filter narrows
    assert (await queue(client, keys, template=tag, threshold=1.0))["total"] == 3 * (flagged + 1)
    only = await queue(client, keys, document=ids[1])
    assert {item["document_id"] for item in only["items"]} == {ids[1]} and only["total"] == flagged
    assert (await queue(client, keys, template=tag, field="total"))["total"] == 0
    assert (await queue(client, keys, template=tag, since="2999-01-01T00:00:00Z"))["total"] == 0


async def test_pages_are_bounded_and_follow_on(review_api):
    client, keys, tag, _, _ = review_api
    first = await queue(client, keys, template=tag, limit=5)
    assert len(first["items"]) == 5 and first["next_offset"] == 5
    rest = await queue(client, keys, template=tag, limit=5, offset=5)
    assert {i["id"] for i in first["items"]}.isdisjoint({i["id"] for i in rest["items"]})
    assert len((await queue(client, keys, limit=MAX_REVIEW_PAGE))["items"]) <= MAX_REVIEW_PAGE
    for params in ({"limit": MAX_REVIEW_PAGE + 1}, {"limit": 0}, {"offset": -1}, {"threshold": 1.5},
                   {"since": "yesterday"}, {"template": "x" * 257}, {"template": "a\x00b"}, {"document": "d\x01"},
                   {"field": "\x00"}, {"since": "9999-12-31T23:59:59-01:00"}):
        response = await client.get("/v1/review", params=params, headers=bearer(keys))
        assert response.status_code == 422, (params, response.text)
        assert response.json()["detail"]["error"] == "InvalidParameterError"


async def test_scopes_and_keys(review_api):
    client, keys, _, _, _ = review_api
    assert (await client.get("/v1/review")).status_code == 401
    assert (await client.get("/v1/review", headers=bearer(keys, "reader"))).status_code == 403
    assert (await client.post("/v1/regions/1/verify", json={"text": "x"},
                              headers=bearer(keys, "reader"))).status_code == 403
    # a review-only key does not read documents
    assert (await client.get("/v1/documents", headers=bearer(keys))).status_code == 403


async def test_verify_stores_who_and_when_and_keeps_a_bounded_history(review_api):
    client, keys, tag, ids, pool = review_api
    item = (await queue(client, keys, document=ids[0]))["items"][0]
    texts = ["TOTAL RM 12.50", "TOTAL RM 12.58", "TOTAL RM 12.55", "TOTAL RM 12.50 "]
    for n, text in enumerate(texts):
        response = await client.post(f"/v1/regions/{item['id']}/verify", json={"text": text}, headers=bearer(keys))
        assert response.status_code == 200, response.text
        assert response.json()["verified_text"] == text.strip() and response.json()["verified_by"] == "alice"
        assert response.json()["history"] == min(n, HISTORY_MAX)  # the 4th correction drops the oldest
    row = await pool.fetchrow("SELECT verified_text, verified_by, verified_at FROM regions WHERE id = $1", item["id"])
    assert (row["verified_text"], row["verified_by"]) == ("TOTAL RM 12.50", "alice") and row["verified_at"]
    history = (await client.get(f"/v1/regions/{item['id']}/corrections", headers=bearer(keys))).json()
    assert [h["text"] for h in history] == ["TOTAL RM 12.55", "TOTAL RM 12.58"]  # newest first, 2 kept
    assert await pool.fetchval("SELECT count(*) FROM region_corrections WHERE document_id = $1 AND region_id = $2",
                               item["document_id"], item["region_id"]) == HISTORY_MAX
    # verified regions leave the queue
    assert item["id"] not in {i["id"] for i in (await queue(client, keys, document=ids[0]))["items"]}


async def test_bad_corrections_are_typed_422s_and_never_500(review_api):
    client, keys, _, ids, pool = review_api
    item = (await queue(client, keys, document=ids[2]))["items"][0]
    url = f"/v1/regions/{item['id']}/verify"
    ok = await client.post(url, json={"text": "x" * MAX_TEXT}, headers=bearer(keys))
    assert ok.status_code == 200, ok.text  # exactly the bound
    for body, status, kind in [
        ({"text": "x" * (MAX_TEXT + 1)}, 422, "InvalidRequestError"),
        ({"text": ""}, 422, "InvalidRequestError"),
        ({"text": "   "}, 422, "InvalidRequestError"),
        ({"text": "a\x00b"}, 422, "InvalidRequestError"),
        ({"text": "two\nlines"}, 422, "InvalidRequestError"),
        ({"text": 12}, 422, "InvalidParameterError"),
        ({}, 422, "InvalidParameterError"),
        ({"text": "x", "who": "mallory"}, 422, "InvalidParameterError"),
    ]:
        response = await client.post(url, json=body, headers=bearer(keys))
        assert (response.status_code, response.json()["detail"]["error"]) == (status, kind), (body, response.text)
    not_json = await client.post(url, content=b"{not json", headers={**bearer(keys), "Content-Type": "application/json"})
    assert not_json.status_code == 422
    huge = await client.post(url, content=b'{"text": "' + b"x" * MAX_BODY_BYTES + b'"}',
                             headers={**bearer(keys), "Content-Type": "application/json"})
    assert huge.status_code == 413
    for path, status in [("/v1/regions/999999999999/verify", 404), ("/v1/regions/0/verify", 422),
                         (f"/v1/regions/{2**63}/verify", 422), ("/v1/regions/abc/verify", 422)]:
        response = await client.post(path, json={"text": "x"}, headers=bearer(keys))
        assert response.status_code == status, (path, response.text)
        assert "error" in response.json()["detail"]
    assert await pool.fetchval("SELECT verified_text FROM regions WHERE id = $1", item["id"]) == "x" * MAX_TEXT


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_crops_are_cut_from_the_original_page_within_the_pixel_bound(review_api):
    client, keys, _, ids, _ = review_api
    items = (await queue(client, keys, document=ids[1], limit=10))["items"]
    line = items[0]
    response = await client.get(f"/v1/regions/{line['id']}/crop", headers=bearer(keys))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    x0, y0, x1, y1 = line["box"]
    width, height = png_size(response.content)
    assert (width, height) == (int(x1 + MARGIN) - int(x0 - MARGIN), int(y1 + MARGIN) - int(y0 - MARGIN))
    assert width * height <= CROP_MAX_PIXELS  # under the bound: the page's own pixels
    whole = next(i for i in items if i["box"] == [0.0, 0.0, float(PAGE_W), float(PAGE_H)])
    assert PAGE_W * PAGE_H > CROP_MAX_PIXELS
    width, height = png_size((await client.get(f"/v1/regions/{whole['id']}/crop", headers=bearer(keys))).content)
    assert width * height <= CROP_MAX_PIXELS and abs(width / height - PAGE_W / PAGE_H) < 0.05  # scaled down
    assert (await client.get("/v1/regions/999999999999/crop", headers=bearer(keys))).json()["detail"]["error"] == \
        "UnknownRegionError"


async def test_a_crop_whose_original_is_gone_is_410(review_api, stack_settings):
    client, keys, _, ids, pool = review_api
    item = (await queue(client, keys, document=ids[2], limit=1))["items"][0]
    await pool.execute("UPDATE documents SET object_key = 'originals/zz/gone' WHERE document_id = $1", ids[2])
    try:
        response = await client.get(f"/v1/regions/{item['id']}/crop", headers=bearer(keys))
        assert (response.status_code, response.json()["detail"]["error"]) == (410, "OriginalUnavailableError")
    finally:
        await pool.execute("UPDATE documents SET object_key = (SELECT object_key FROM documents"
                           " WHERE document_id = $2) WHERE document_id = $1", ids[2], ids[0])


async def test_the_page_logs_in_with_a_review_key_into_a_strict_httponly_cookie(review_api):
    client, keys, _, ids, _ = review_api
    assert 'name="key"' in (await client.get("/review")).text  # no session: the login form
    hostile = (await client.get("/review", params={"template": '"><script>alert(1)</script>'})).text
    assert "<script>alert" not in hostile and "/review/login?template=" in hostile  # filters kept, escaped
    assert (await client.post("/review/login", data={"key": "ocs_nope"})).status_code == 401
    assert (await client.post("/review/login", data={"key": keys["reader"]})).status_code == 403
    assert (await client.post("/review/login", data={"key": "x" * 201})).status_code == 422
    cross = await client.post("/review/login", data={"key": keys["reviewer"]}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and COOKIE not in cross.cookies  # login CSRF
    response = await client.post("/review/login?template=t1", data={"key": keys["reviewer"]})
    assert response.status_code == 303 and response.headers["location"] == "/review?template=t1"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    sid = response.cookies[COOKIE]
    client.cookies.clear()
    client.cookies.set(COOKIE, sid)
    try:
        page = await client.get("/review")
        assert 'name="csrf-token"' in page.text and "script-src 'self'" in page.headers["content-security-policy"]
        csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        item = (await queue(client, keys, document=ids[1], limit=1))["items"][0]
        url = f"/v1/regions/{item['id']}/verify"
        # the cookie alone reads, but a POST without (or with a wrong) CSRF token is refused
        assert (await client.get("/v1/review")).status_code == 200
        assert (await client.post(url, json={"text": "CASH"})).status_code == 403
        assert (await client.post(url, json={"text": "CASH"}, headers={"X-CSRF-Token": "wrong"})).status_code == 403
        saved = await client.post(url, json={"text": "CASH"}, headers={"X-CSRF-Token": csrf})
        assert saved.status_code == 200 and saved.json()["verified_by"] == "alice"
        assert (await client.post("/review/logout", headers={"X-CSRF-Token": csrf})).status_code == 200
        client.cookies.set(COOKIE, sid)
        assert (await client.get("/v1/review")).status_code == 401
    finally:
        client.cookies.clear()


async def test_the_review_pool_may_write_only_corrections(review_api):
    client, _, _, ids, _ = review_api
    import asyncpg

    async with client.write_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == "ocrstream_review"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE regions SET text = 'forged' WHERE document_id = $1", ids[0])
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM documents WHERE document_id = $1", ids[0])


def test_marked_reading_marks_low_characters_and_tolerates_misaligned_probabilities():
    assert marked_reading("ab1", [0.99, 0.2, 0.1], 0.9) == [{"text": "a", "low": False}, {"text": "b1", "low": True}]
    assert marked_reading("abc", [0.1], 0.9) == [{"text": "abc", "low": False}]
    assert marked_reading("abc", None, 0.9) == [{"text": "abc", "low": False}]
    assert marked_reading("", None, 0.9) == []


async def test_label_export_takes_the_corrections_with_crops_cut_from_the_original(review_api, stack_settings,
                                                                                  tmp_path):
    """``ocrstream model label-export --from-store`` (ocrstream/training/labels.py) exports what
    reviewers verified; these regions' crop packs were never stored, so their crops are cut from
    the original page in the object store."""
    import cv2

    from ocrstream.training.labels import verified_lines

    client, keys, _, ids, pool = review_api
    item = (await queue(client, keys, document=ids[1], limit=1))["items"][0]
    response = await client.post(f"/v1/regions/{item['id']}/verify", json={"text": "CASH 20.00"}, headers=bearer(keys))
    assert response.status_code == 200
    records = {r["id"]: r for r in await verified_lines(stack_settings, tmp_path) if r["id"].startswith(ids[1])}
    mine = records[f"{ids[1]}/{item['region_id']}"]
    assert (mine["text"], mine["verified_by"]) == ("CASH 20.00", "alice")
    crop = cv2.imread(str(tmp_path / mine["image"]))
    x0, y0, x1, y1 = item["box"]
    assert crop.shape[:2] == (int(y1) - int(y0), int(x1) - int(x0)) and crop.min() < 100  # ink of the line

"""The review page in a real browser: Debian's chromium driven by Playwright for Python, against
the query API served by uvicorn on the real embedded stack (PostgreSQL, object store). Logs in
with an API key, corrects three regions with the keyboard (Enter saves, Esc skips, ArrowUp goes
back) and checks the rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil

import httpx
import pytest

from ocrstream.ops.launcher import free_port
from ocrstream.storage.db import create_read_pool, create_review_pool
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming.auth import Authenticator, create_key
from ocrstream.streaming.http import serve_until
from services.store.api import create_app
from services.store.stage import StoreStage
from tests.review_data import LINES, store_review_documents

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="module")
async def served(stack_settings, tmp_path_factory):
    """The query API with the review page on a free loopback port: ``(base url, key, tag, ids, store pool)``."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (./test.sh installs it as root: apt-get install chromium)")
    keys_file = tmp_path_factory.mktemp("keys") / "keys.jsonl"
    key = create_key(keys_file, "carol", ("review",))
    settings = stack_settings.model_copy(update={"api_keys_file": str(keys_file), "rate_limit_per_minute": 0})
    stage = StoreStage(settings)
    await stage.setup()
    store = ObjectStore(settings)
    await store.ensure_bucket()
    tag, ids = await store_review_documents(stage, store, 2, prefix="page")
    read, write = await create_read_pool(settings), await create_review_pool(settings)
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_until(create_app(read, Authenticator(settings, "127.0.0.1"), store, settings,
                                                        write), "127.0.0.1", port, stop, "api"))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:  # up when /healthz answers (bounded by the test's timeout)
        while True:
            try:
                if (await client.get(base + "/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
    yield base, key, tag, ids, stage.pool
    stop.set()
    await server
    await read.close()
    await write.close()
    await stage.teardown()


async def test_a_reviewer_corrects_three_regions_with_the_keyboard(served, tmp_path):
    from playwright.async_api import async_playwright, expect

    base, key, tag, ids, pool = served
    flagged = sum(1 for _, c in LINES if c < 0.98)
    total = 2 * flagged
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            failed: list[tuple[str, int]] = []
            page.on("response", lambda r: failed.append((r.url, r.status)) if r.status >= 400 else None)
            await page.goto(f"{base}/review?template={tag}")
            await page.locator("#key").fill(key)
            await page.keyboard.press("Enter")

            text, progress = page.locator("#text"), page.locator("#progress")
            await expect(progress).to_have_text(f"1 of {total}")
            await expect(text).to_be_focused()
            await expect(text).to_have_value("#OTAL RM 12.50")  # prefilled with the reading
            await expect(page.locator("#reading mark")).to_have_text("#")  # the low-probability character
            await expect(page.locator("#crop")).to_have_js_property("complete", True)
            assert await page.locator("#crop").evaluate("img => img.naturalWidth") > 100  # cut from the page

            # 1: replace the whole reading
            await page.keyboard.press("Control+A")
            await page.keyboard.type("TOTAL RM 12.50")
            await page.keyboard.press("Enter")
            await expect(progress).to_have_text(f"2 of {total}")
            await expect(text).to_have_value("#ASH 20.00")

            # skip it with Esc, come back with ArrowUp, then correct it: 2
            await page.keyboard.press("Escape")
            await expect(progress).to_have_text(f"3 of {total}")
            await page.keyboard.press("ArrowUp")
            await expect(progress).to_have_text(f"2 of {total}")
            await expect(text).to_have_value("#ASH 20.00")
            await page.keyboard.press("Home")
            await page.keyboard.press("Delete")
            await page.keyboard.type("C")
            await page.keyboard.press("Enter")

            # 3: fix the first character, go on
            await expect(progress).to_have_text(f"3 of {total}")
            await expect(text).to_have_value("#HANGE 7.50")
            await page.keyboard.press("Home")
            await page.keyboard.press("Shift+ArrowRight")
            await page.keyboard.type("C")
            await page.keyboard.press("Enter")
            await expect(progress).to_have_text(f"4 of {total}")
            await expect(page.locator("#status")).to_have_text("saved region " + str(await region_id(pool, ids[0], 2)))

            # a rejected correction (empty) shows the typed error and stays on the region
            await page.keyboard.press("Control+A")
            await page.keyboard.press("Delete")
            await page.keyboard.press("Enter")
            await expect(page.locator("#status")).to_contain_text("422 InvalidRequestError")
            await expect(progress).to_have_text(f"4 of {total}")
            await page.screenshot(path=os.environ.get("OCRSTREAM_REVIEW_SCREENSHOT", str(tmp_path / "review.png")))
            assert not errors, errors  # no script error
            # the one failed request is the refused correction (and the browser asking for a favicon)
            assert [(u.rsplit("/", 2)[-1], s) for u, s in failed if not u.endswith("/favicon.ico")] == [("verify", 422)]
        finally:
            await browser.close()

    rows = await pool.fetch("SELECT region_id, verified_text, verified_by, verified_at FROM regions"
                            " WHERE document_id = ANY($1::text[]) AND verified_text IS NOT NULL"
                            " ORDER BY document_id, reading_order", ids)
    assert [(r["region_id"], r["verified_text"], r["verified_by"]) for r in rows] == [
        ("p0-r0", "TOTAL RM 12.50", "carol"), ("p0-r1", "CASH 20.00", "carol"), ("p0-r2", "CHANGE 7.50", "carol")]
    assert all(r["verified_at"] for r in rows)


async def region_id(pool, document_id: str, order: int) -> int:
    return await pool.fetchval("SELECT id FROM regions WHERE document_id = $1 AND reading_order = $2",
                               document_id, order)

"""Review on the query API: the queue, verifying regions, their crops, and the ``/review`` page.

Routes (added to the query API by :func:`add_review`; scope ``review``):

* ``GET /v1/review?threshold=&template=&field=&since=&document=&limit=&offset=`` - regions that
  need a person (:func:`ocrstream.storage.review.review_queue`), oldest first, at most
  :data:`~ocrstream.storage.review.MAX_REVIEW_PAGE` per page.
* ``POST /v1/regions/{id}/verify`` ``{"text": ...}`` - stores the correction with the key's
  name and the time; the earlier one goes to the history. Empty, over-long
  (``OCRSTREAM_REVIEW_MAX_TEXT_CHARS``) or control characters: 422.
* ``GET /v1/regions/{id}/crop`` - a PNG of the region cut on the fly from its original page in the
  object store, at most ``OCRSTREAM_REVIEW_CROP_MAX_PIXELS`` pixels (scaled down to fit).
* ``GET /v1/regions/{id}/corrections`` - the region's earlier corrections, newest first.
* ``GET /review`` - the page (plain HTML + ``/review/app.js``, no build step); without a session
  it is a login form. ``POST /review/login`` (form field ``key``) checks the key's ``review``
  scope and sets an HttpOnly, SameSite=Strict session cookie (Secure over HTTPS);
  ``POST /review/logout`` ends it.

Authentication: a bearer key (as every ``/v1`` route), or the page's session cookie; a POST with
the cookie must carry the session's CSRF token in ``X-CSRF-Token`` (the page reads it from its
``<meta name="csrf-token">``), else 403. Sessions are signed cookies (:class:`Sessions`), valid on
every replica that shares ``OCRSTREAM_REVIEW_SESSION_SECRET``, for ``OCRSTREAM_REVIEW_SESSION_TTL_S``,
and only while their key is in the keys file with the ``review`` scope.

Errors are 4xx with a typed body ``{"detail": {"error": <type>, "message"}}``
(:class:`ocrstream.errors.RequestError`; bad parameters: the API's ``InvalidParameterError``):
never a 500 for bad input. Decoding the original page, cutting and PNG-encoding the crop run in
a worker thread; the last few decoded pages are cached (:class:`PageCache`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated

import asyncpg
import cv2
import numpy as np
from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, StringConstraints

from ocrstream.errors import (
    BadInputError,
    MissingObjectError,
    OriginalUnavailableError,
    RequestError,
)
from ocrstream.ocr.decode import Budget, open_document
from ocrstream.settings import Settings
from ocrstream.storage import review
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming.auth import ApiKey, Authenticator
from ocrstream.streaming.http import MAX_NAME_CHARS, NAME_PATTERN, Instant

#: A name or id parameter (template, field, document): bounded, no control characters (NUL included).
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]

COOKIE = "ocrstream_review"
CSRF_HEADER = "x-csrf-token"
#: Largest region id PostgreSQL's bigint holds (a larger one is a 422, not an overflow).
MAX_ID = 2**63 - 1
_PAGE_FILES = resources.files("services.store").joinpath("review_page")


class Correction(BaseModel):
    """Body of ``POST /v1/regions/{id}/verify``."""

    model_config = ConfigDict(extra="forbid")
    text: str


@dataclass(frozen=True)
class Session:
    """A review page login: the key's name, the key's hash prefix, the CSRF token, when it ends
    (Unix seconds) and the token's nonce."""

    name: str
    key_id: str
    csrf: str
    expires: int
    nonce: str


class Sessions:
    """The review page's logins as signed cookies (no server state, so any API replica accepts
    them): ``name.key_id.expires.nonce.mac``, ``mac`` = HMAC-SHA256 of the rest under ``secret``
    (``OCRSTREAM_REVIEW_SESSION_SECRET``; a random one per process when unset: then a login
    holds on that replica only). The CSRF token is an HMAC of the session token. A session
    ends after ``ttl_s``, at logout (its nonce is refused by this process: at most
    ``max_revoked`` remembered) and when its API key leaves the keys file (:meth:`get` with
    ``keys``).
    """

    def __init__(self, secret: bytes, ttl_s: int, max_revoked: int = 1000):
        self.secret, self.ttl_s, self.max_revoked = secret, ttl_s, max_revoked
        self._revoked: OrderedDict[str, None] = OrderedDict()

    def _mac(self, what: str) -> str:
        return hmac.new(self.secret, what.encode(), hashlib.sha256).hexdigest()

    def create(self, name: str, key_id: str = "-", now: float | None = None) -> tuple[str, Session]:
        """A new session for key ``name`` (``key_id``: its hash prefix): ``(cookie value, session)``."""
        expires = int((time.time() if now is None else now) + self.ttl_s)
        payload = ".".join((base64.urlsafe_b64encode(name.encode()).decode().rstrip("="), key_id, str(expires),
                            secrets.token_urlsafe(16)))
        token = f"{payload}.{self._mac(payload)}"
        session = self.get(token, now=now)
        assert session is not None
        return token, session

    def get(self, token: str | None, keys: Mapping[str, ApiKey] | None = None,
            now: float | None = None) -> Session | None:
        """The session of cookie value ``token``, or None: malformed, not signed by this secret,
        expired, logged out, or (``keys``: the key file's keys by hash) its key gone or without
        the ``review`` scope."""
        if not token or len(token) > 1024:
            return None
        payload, _, mac = token.rpartition(".")
        parts = payload.split(".")
        if len(parts) != 4 or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        name_b64, key_id, expires_s, nonce = parts
        try:
            name = base64.urlsafe_b64decode(name_b64 + "=" * (-len(name_b64) % 4)).decode()
            expires = int(expires_s)
        except (ValueError, UnicodeDecodeError):
            return None
        if expires < (time.time() if now is None else now) or nonce in self._revoked:
            return None
        if keys is not None:
            key = next((k for h, k in keys.items() if h.startswith(key_id)), None) if key_id != "-" else None
            if key is None or key.name != name or "review" not in key.scopes:
                return None
        return Session(name, key_id, self._mac("csrf." + payload), expires, nonce)

    def drop(self, token: str | None) -> None:
        """Log out the session of ``token`` in this process (nothing if it is not one)."""
        session = self.get(token)
        if session is not None:
            self._revoked[session.nonce] = None
            while len(self._revoked) > self.max_revoked:
                self._revoked.popitem(last=False)


class PageCache:
    """The last ``size`` decoded pages (``(object_key, page_index)`` -> BGR array), for crops of
    the same page one after the other; thread-safe (crops are cut in worker threads)."""

    def __init__(self, size: int = 2):
        self.size = size
        self._pages: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: tuple[str, int], page: np.ndarray) -> None:
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)


def decode_page(original: bytes, page_index: int, budget: Budget) -> np.ndarray:
    """Page ``page_index`` of an original document as ``(h, w, 3)`` uint8 BGR (CPU: call it in a thread).

    Raises OriginalUnavailableError: the original does not decode (within ``budget``) or has no such page.
    """
    try:
        with open_document(original, budget) as doc:
            if not 0 <= page_index < len(doc):
                raise OriginalUnavailableError(f"the original has {len(doc)} pages; no page {page_index + 1}")
            return doc.page(page_index)
    except BadInputError as exc:
        raise OriginalUnavailableError(f"the original page does not decode: {type(exc).__name__}: {exc}") from None


def cut_crop(page: np.ndarray, box: list[float], page_size: tuple[int, int], *, margin_px: int,
             max_pixels: int) -> bytes:
    """The PNG of ``box`` (``[x0, y0, x1, y1]`` in the stored page's pixels, ``page_size`` =
    ``(width, height)``) on ``page`` plus ``margin_px`` around it, scaled down (area
    interpolation) to at most ``max_pixels`` pixels. A page decoded at another size than stored
    (e.g. another ``pdf_dpi``) has the box scaled to it. CPU work: call it in a thread.

    Raises OriginalUnavailableError: the box lies outside the page.
    """
    height, width = page.shape[:2]
    sx, sy = width / max(1, page_size[0]), height / max(1, page_size[1])
    x0 = max(0, int(np.floor((box[0] - margin_px) * sx)))
    y0 = max(0, int(np.floor((box[1] - margin_px) * sy)))
    x1 = min(width, int(np.ceil((box[2] + margin_px) * sx)))
    y1 = min(height, int(np.ceil((box[3] + margin_px) * sy)))
    if x1 <= x0 or y1 <= y0:
        raise OriginalUnavailableError(f"the region's box {box} lies outside its {width}x{height} page")
    crop = page[y0:y1, x0:x1]
    pixels = crop.shape[0] * crop.shape[1]
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", crop)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 BGR array
        raise OriginalUnavailableError("the crop could not be encoded")
    return png.tobytes()


def add_review(app: FastAPI, pool: asyncpg.Pool, auth: Authenticator, settings: Settings,
               store: ObjectStore | None = None, write_pool: asyncpg.Pool | None = None) -> None:
    """Add the review routes and page to the query API ``app``.

    ``pool``: the read-only pool; ``write_pool``: one that may store corrections
    (:func:`ocrstream.storage.db.create_review_pool`; None: verify answers 503); ``store``: the
    originals' bucket (None: crops answer 503).
    """
    secret = settings.review_session_secret.get_secret_value().encode() if settings.review_session_secret \
        else secrets.token_bytes(32)
    sessions = Sessions(secret, settings.review_session_ttl_s, settings.review_max_sessions)

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(COOKIE), auth.keys if auth.required else None)
    pages = PageCache()
    budget = Budget.from_settings(settings)
    char_threshold = settings.review_char_threshold
    bearer = auth.require("review")

    @app.exception_handler(RequestError)
    async def typed_error(request: Request, exc: RequestError) -> JSONResponse:
        """A refused review request: ``{"detail": {"error": <type>, "message"}}`` (the API's typed form)."""
        return JSONResponse({"detail": {"error": type(exc).__name__, "message": str(exc)}}, status_code=exc.status)

    async def reviewer(request: Request) -> str | None:
        """The reviewer's name: from the session cookie (a POST must carry its CSRF token), else a key."""
        has_key = request.headers.get("authorization") or request.headers.get("x-api-key")
        session = None if has_key else session_of(request)
        if session is None:
            return await bearer(request)
        if request.method == "POST" and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token)")
        auth.check_rate(session.name)
        return session.name

    region_id = Path(..., ge=1, le=MAX_ID, description="the region's id (``id`` of GET /v1/review)")

    @app.get("/v1/review", tags=["review"])
    async def review_list(who: str | None = Depends(reviewer),
                          threshold: float | None = Query(None, ge=0, le=1),
                          template: Name | None = None,
                          field: Name | None = None,
                          since: Instant | None = None,
                          document: Name | None = None,
                          limit: int = Query(50, ge=1, le=review.MAX_REVIEW_PAGE),
                          offset: int = Query(0, ge=0, le=10_000_000)) -> dict:
        """Regions that need a person: flagged ``needs_review``, or (``threshold``) a confidence
        at or under it (1: every region); not yet verified; oldest document first; ``next_offset`` pages on."""
        query = review.ReviewQuery(threshold, template, field, since, document, limit, offset)
        return await review.review_queue(pool, query, char_threshold)

    @app.post("/v1/regions/{region_id}/verify", tags=["review"])
    async def verify(body: Correction, region_id: int = region_id, who: str | None = Depends(reviewer)) -> dict:
        """Store ``text`` as the region's verified text (by the key's name, now); 422 when empty,
        over ``OCRSTREAM_REVIEW_MAX_TEXT_CHARS`` or holding control characters; 404 unknown."""
        if write_pool is None:
            raise HTTPException(503, "this query API cannot store corrections (no review pool)")
        return await review.verify_region(write_pool, region_id, body.text, who or "anonymous",
                                          max_chars=settings.review_max_text_chars,
                                          history_max=settings.review_history_max)

    @app.get("/v1/regions/{region_id}/corrections", tags=["review"])
    async def region_corrections(region_id: int = region_id, who: str | None = Depends(reviewer)) -> list[dict]:
        """The region's earlier corrections, newest first (at most ``OCRSTREAM_REVIEW_HISTORY_MAX``)."""
        return await review.corrections(pool, region_id)

    @app.get("/v1/regions/{region_id}/crop", tags=["review"])
    async def crop(region_id: int = region_id, who: str | None = Depends(reviewer)) -> Response:
        """PNG of the region cut from its original page (at most ``OCRSTREAM_REVIEW_CROP_MAX_PIXELS``)."""
        region = await review.load_region(pool, region_id, char_threshold)
        if store is None:
            raise HTTPException(503, "this query API has no object store (crops unavailable)")
        key = (region["object_key"] or "", region["page_index"])
        page = pages.get(key)
        if page is None:
            if not region["object_key"]:
                raise OriginalUnavailableError(f"region {region_id}'s document has no original in the object store")
            try:
                original = await store.get(region["object_key"])
            except MissingObjectError as exc:
                raise OriginalUnavailableError(str(exc)) from None
            page = await asyncio.to_thread(decode_page, original, region["page_index"], budget)
            pages.put(key, page)
        png = await asyncio.to_thread(cut_crop, page, region["box"], (region["page_width"], region["page_height"]),
                                      margin_px=settings.review_crop_margin_px,
                                      max_pixels=settings.review_crop_max_pixels)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/review", include_in_schema=False)
    async def page(request: Request) -> Response:
        """The review page, or its login form without a session."""
        session = session_of(request)
        if session is None:
            return _html(_login_page("", request.url.query))
        return _html(_page_file("review.html").replace("{{csrf}}", html.escape(session.csrf))
                     .replace("{{name}}", html.escape(session.name)))

    @app.get("/review/app.js", include_in_schema=False)
    async def script() -> Response:
        return Response(_page_file("app.js"), media_type="text/javascript",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.get("/review/app.css", include_in_schema=False)
    async def style() -> Response:
        return Response(_page_file("app.css"), media_type="text/css",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @app.post("/review/login", include_in_schema=False)
    async def login(request: Request, key: str = Form("", max_length=200)) -> Response:
        """Check ``key`` (a key with the ``review`` scope; any, when keys are not required) and
        start a session: 303 to ``/review`` with the cookie, or the form again with 401/403.
        A login posted from another site (the browser's ``Sec-Fetch-Site: cross-site``) is
        refused: no one can log a reviewer in under their own key."""
        if request.headers.get("sec-fetch-site") == "cross-site":
            return _html(_login_page("a login must come from this page", request.url.query), 403)
        if auth.required:
            found = auth.key_for(key.strip())
            if found is None:
                return _html(_login_page("unknown API key", request.url.query), 401)
            if "review" not in found.scopes:
                return _html(_login_page(f"API key {found.name!r} lacks the review scope", request.url.query), 403)
            auth.check_rate(found.name)
            name, key_id = found.name, found.sha256[:16]
        else:
            name, key_id = "local", "-"
        sessions.drop(request.cookies.get(COOKIE))
        sid, _ = sessions.create(name, key_id)
        # back to the page with the filters it was opened with (the login form's query string)
        response = RedirectResponse("/review" + (f"?{request.url.query}" if request.url.query else ""), 303)
        response.set_cookie(COOKIE, sid, max_age=int(settings.review_session_ttl_s), path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.post("/review/logout", include_in_schema=False)
    async def logout(request: Request, who: str | None = Depends(reviewer)) -> Response:
        """End the session (CSRF token required) and clear the cookie."""
        sessions.drop(request.cookies.get(COOKIE))
        response = JSONResponse({"ok": True})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response


def _page_file(name: str) -> str:
    return _PAGE_FILES.joinpath(name).read_text("utf-8")


def _login_page(error: str, query: str) -> str:
    """The login form; it posts to ``/review/login`` with the page's ``query`` (its filters)."""
    action = "/review/login" + (f"?{query}" if query else "")
    return (_page_file("login.html").replace("{{action}}", html.escape(action, quote=True))
            .replace("{{error}}", f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""))


#: The page's policy: its own scripts, styles and images only; never framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status, headers={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                                               "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})


__all__ = ["COOKIE", "CSP", "Correction", "PageCache", "Sessions", "add_review", "cut_crop", "decode_page"]

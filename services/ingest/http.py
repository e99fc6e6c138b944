"""The ingest stage's HTTP door: ``POST /v1/documents[?wait=SECONDS]`` and ``GET /healthz`` (FastAPI).

Served by ``ocrstream run ingest`` beside its Kafka loop (:meth:`services.ingest.stage.IngestStage.background`),
on a loop of its own. Every submission goes through the same :class:`~services.ingest.stage.Submitter`
as the CLI door; this module only maps HTTP onto it (multipart field ``file``, optional form field
``template``, the API key of :mod:`ocrstream.streaming.auth`). It lives apart from the stage so that the
CLI's submit path never imports FastAPI.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, Request, Response, UploadFile

from ocrstream.contracts import events
from ocrstream.errors import (
    DocumentTooLargeError,
    EmptyDocumentError,
    IdempotencyKeyReusedError,
    InvalidSubmissionError,
    NotAnImageError,
)
from ocrstream.streaming.auth import Authenticator
from ocrstream.streaming.http import NAME_PATTERN, BodyLimit, create_api
from ocrstream.streaming.ingestor import Submitter, content_sha256
from ocrstream.streaming.results import ResultWaiters
from ocrstream.streaming.retry import is_transient
from ocrstream.streaming.tracing import TraceContextMiddleware
from services.ingest.idempotency import KEY_PATTERN, MAX_KEY_CHARS, IdempotencyKeys, fingerprint

log = logging.getLogger(__name__)

#: HTTP status of each refusal at the HTTP door.
REFUSAL_STATUS = {EmptyDocumentError: 400, DocumentTooLargeError: 413, NotAnImageError: 415,
                  InvalidSubmissionError: 400}  # e.g. a refused callback_url
#: Longest ``?wait=`` of ``POST /v1/documents``, seconds.
MAX_WAIT_S = 60.0
#: ``Retry-After`` (seconds) of a 503: the broker or object store did not take the document.
RETRY_AFTER_S = 5
#: Longest ``template`` form field (the raw topic's header has the same bound).
MAX_TEMPLATE_CHARS = 64


def create_app(submitter: Submitter, auth: Authenticator, results: ResultWaiters | None = None,
               idempotency: IdempotencyKeys | None = None) -> FastAPI:
    """The ingest HTTP API: ``POST /v1/documents[?wait=SECONDS]`` and ``GET /healthz``
    (``?wait=`` needs ``results``; ``Idempotency-Key`` needs ``idempotency``, by default kept in
    the submitter's object store: services/ingest/idempotency.py).

    Bodies over the byte limit are refused with 413 before they are read (``Content-Length``)
    or as soon as the streamed body passes it (:class:`~ocrstream.streaming.http.BodyLimit`).
    """
    limit = submitter.settings.max_document_bytes
    app = create_api("ocrstream ingest", auth, "ingest")
    app.add_middleware(BodyLimit, max_bytes=limit + 64 * 1024)  # room for the multipart envelope
    app.add_middleware(TraceContextMiddleware)  # a caller's traceparent: the document's trace continues it

    @app.post("/v1/documents", status_code=202)
    async def post_document(request: Request, response: Response, file: UploadFile = File(...),
                            template: str | None = Form(None, min_length=1, max_length=MAX_TEMPLATE_CHARS,
                                                        pattern=NAME_PATTERN),
                            callback_url: str | None = Form(None, max_length=2048, description=(
                                "completion webhook: a signed POST of the result summary (README \"Webhooks\")")),
                            wait: float = Query(0, ge=0, le=MAX_WAIT_S, description=(
                                "Seconds to wait for the result: 200 with it (status done or failed, "
                                "the ocr.results.v1 event in `result`) if stored in time, else 202.")),
                            idempotency_key: str | None = Header(
                                None, alias="Idempotency-Key", max_length=MAX_KEY_CHARS + 2, pattern=KEY_PATTERN,
                                description="Makes retries safe: the same key with the same document gets the "
                                            "same document and answer; with another document, 422."),
                            key: str | None = Depends(auth.require("ingest"))) -> dict:
        """Submit one document (multipart field ``file``, optional ``template`` name).

        202 with its id once its event is acknowledged by the broker (200 with its result when
        ``?wait=`` saw it stored); refused with 400 (empty), 413 (too large), 415 (unsupported
        type), 401/403 (API key), 429 (rate limit); 503 with ``Retry-After`` when the broker or
        the object store does not answer (nothing was accepted: submit again later). With an
        ``Idempotency-Key``, a retry gets the first answer (422 if the key came with another document).
        One document per request: more than one ``file`` (or ``template``) field is a 400.
        """
        form = await request.form()  # parsed once already for the parameters: cached
        for name in ("file", "template"):
            if len(form.getlist(name)) > 1:
                raise HTTPException(400, detail={"error": InvalidSubmissionError.__name__, "message": (
                    f"{len(form.getlist(name))} '{name}' fields: one document per request (post each file on its own)")})
        data = await file.read(limit + 1)
        if idempotency_key is None:
            return await accept(response, data, file.filename, template, wait, callback_url=callback_url,
                                api_key=key)
        keys = remembered_answers()
        scoped = keys.scoped(key, idempotency_key)
        sha = await asyncio.to_thread(content_sha256, data)
        content_print = fingerprint(sha, template)
        async with keys.exclusive(scoped):
            if (earlier := await keys.recall(scoped)) is not None:
                if earlier.fingerprint != content_print:
                    raise HTTPException(422, detail={
                        "error": IdempotencyKeyReusedError.__name__,
                        "message": "this Idempotency-Key was used with another document (other bytes or template)"})
                accepted = earlier.answer
            else:
                accepted = await accept(response, data, file.filename, template, 0, keys.document_id(scoped, content_print),
                                        sha, callback_url=callback_url, api_key=key)
                try:
                    await keys.remember(scoped, content_print, accepted)
                except Exception as exc:  # accepted anyway; a retry re-derives the same document id
                    log.warning("ingest: answer for an Idempotency-Key not remembered (%s: %s)",
                                type(exc).__name__, exc)
        if wait and results is not None and accepted["status"] == "accepted":
            if (event := await results.wait(accepted["document_id"], wait)) is not None:
                response.status_code = 200
                return {**accepted, "status": event.status, "result": events.to_json_object(event)}
        return accepted

    state: dict[str, IdempotencyKeys] = {}

    def remembered_answers() -> IdempotencyKeys:
        if idempotency is not None:
            return idempotency
        if "keys" not in state:
            state["keys"] = IdempotencyKeys(submitter.ingestor.store, submitter.settings.idempotency_ttl_s)
        return state["keys"]

    async def accept(response: Response, data: bytes, filename: str | None, template: str | None, wait: float,
                     document_id: str | None = None, sha: str | None = None, *,
                     callback_url: str | None = None, api_key: str | None = None) -> dict:
        """Submit ``data``; the 202 answer (200 with the result when ``wait`` saw it stored)."""
        try:
            receipt = await submitter.submit(data, filename, "http", template, document_id=document_id, sha=sha,
                                             **({"callback_url": callback_url} if callback_url else {}),
                                             **({"api_key": api_key} if api_key else {}))
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("ingest: HTTP submission not taken: %s: %s", type(exc).__name__, exc)
            raise HTTPException(503, headers={"Retry-After": str(RETRY_AFTER_S)}, detail={
                "error": type(exc).__name__,
                "message": "the pipeline's broker or object store did not answer; submit again later"}) from exc
        if receipt.error is not None:
            status = next((code for cls, code in REFUSAL_STATUS.items() if isinstance(receipt.error, cls)), 422)
            raise HTTPException(status, detail={"error": type(receipt.error).__name__,
                                                "message": str(receipt.error)})
        accepted = {"document_id": receipt.document_id, "object_key": receipt.object_key,
                    "status": "reused" if receipt.reused else "accepted"}
        if wait and results is not None and not receipt.reused:
            if (event := await results.wait(receipt.document_id, wait)) is not None:
                response.status_code = 200
                return {**accepted, "status": event.status, "result": events.to_json_object(event)}
        return accepted

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    return app

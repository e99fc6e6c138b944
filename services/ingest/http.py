"""The ingest stage's HTTP door: ``POST /v1/documents[?wait=SECONDS]`` and ``GET /healthz`` (FastAPI).

Served by ``ocrstream run ingest`` beside its Kafka loop (:meth:`services.ingest.stage.IngestStage.background`),
on a loop of its own. Every submission goes through the same :class:`~services.ingest.stage.Submitter`
as the CLI door; this module only maps HTTP onto it (multipart field ``file``, optional form field
``template``, the API key of :mod:`ocrstream.streaming.auth`). It lives apart from the stage so that the
CLI's submit path never imports FastAPI.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Response, UploadFile

from ocrstream.contracts import events
from ocrstream.errors import DocumentTooLargeError, EmptyDocumentError, InvalidSubmissionError, NotAnImageError
from ocrstream.streaming.auth import Authenticator
from ocrstream.streaming.http import BodyLimit
from ocrstream.streaming.ingestor import Submitter
from ocrstream.streaming.results import ResultWaiters
from ocrstream.streaming.retry import is_transient
from ocrstream.streaming.tracing import TraceContextMiddleware

#: HTTP status of each refusal at the HTTP door.
REFUSAL_STATUS = {EmptyDocumentError: 400, DocumentTooLargeError: 413, NotAnImageError: 415,
                  InvalidSubmissionError: 400}  # e.g. a refused callback_url
#: Longest ``?wait=`` of ``POST /v1/documents``, seconds.
MAX_WAIT_S = 60.0
#: ``Retry-After`` (seconds) of a 503: the broker or object store did not take the document.
RETRY_AFTER_S = 5


def create_app(submitter: Submitter, auth: Authenticator, results: ResultWaiters | None = None) -> FastAPI:
    """The ingest HTTP API: ``POST /v1/documents[?wait=SECONDS]`` and ``GET /healthz``
    (``?wait=`` needs ``results``).

    Bodies over the byte limit are refused with 413 before they are read (``Content-Length``)
    or as soon as the streamed body passes it (:class:`~ocrstream.streaming.http.BodyLimit`).
    """
    limit = submitter.settings.max_document_bytes
    app = FastAPI(title="ocrstream ingest", version="1")
    app.add_middleware(BodyLimit, max_bytes=limit + 64 * 1024)  # room for the multipart envelope
    app.add_middleware(TraceContextMiddleware)  # a caller's traceparent: the document's trace continues it

    @app.post("/v1/documents", status_code=202)
    async def post_document(response: Response, file: UploadFile = File(...), template: str | None = Form(None),
                            callback_url: str | None = Form(None, description=(
                                "completion webhook: a signed POST of the result summary (README \"Webhooks\")")),
                            wait: float = Query(0, ge=0, le=MAX_WAIT_S, description=(
                                "Seconds to wait for the result: 200 with it (status done or failed, "
                                "the ocr.results.v1 event in `result`) if stored in time, else 202.")),
                            key: str | None = Depends(auth.require("ingest"))) -> dict:
        """Submit one document (multipart field ``file``, optional ``template`` name).

        202 with its id once its event is acknowledged by the broker (200 with its result when
        ``?wait=`` saw it stored); refused with 400 (empty), 413 (too large), 415 (unsupported
        type), 401/403 (API key), 429 (rate limit); 503 with ``Retry-After`` when the broker or
        the object store does not answer (nothing was accepted: submit again later).
        """
        data = await file.read(limit + 1)
        try:
            receipt = await submitter.submit(data, file.filename, "http", template,
                                             **({"callback_url": callback_url} if callback_url else {}))
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise HTTPException(503, headers={"Retry-After": str(RETRY_AFTER_S)}, detail={
                "error": type(exc).__name__,
                "message": f"the pipeline's broker or object store did not answer ({exc}); submit again later"}) from exc
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

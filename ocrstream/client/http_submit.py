"""``ocrstream submit`` through the ingest stage's HTTP door: the quick way to one answer.

The CLI door (:mod:`ocrstream.client.client`) talks to the broker, S3 and PostgreSQL itself: a new
process pays for importing and connecting three clients (aiokafka, minio, asyncpg) before it
submits anything -- ~0.7 s of the ~1.2 s a ``submit --wait`` process spent before its first byte
went out on the shared 2-core host (issue 15). The ingest stage already holds those connections
and a results reader (:class:`ocrstream.streaming.results.ResultWaiters`), so a client that only speaks
HTTP gets the same answer with one request: ``POST /v1/documents?wait=SECONDS`` (200 with the
``ocr.results.v1`` event once stored, 202 if the wait ran out first). This module needs only
``urllib3`` (the HTTP client minio is built on) and six settings (:class:`DoorSettings`), which a new
process reads without pydantic (:mod:`ocrstream.environment`).

Every file is posted with an ``Idempotency-Key`` of its own (a random UUID): when the connection
breaks after the request went out (the answer was lost: the door may have accepted it), the same
request is sent again with the same key, at most :data:`RESENDS` times, and the door answers with
the first document instead of making a second (services/ingest/idempotency.py).

The door is found at ``OCRSTREAM_INGEST_URL``, else at the ingest stage's own bind address
(``OCRSTREAM_HTTP_HOST``/``OCRSTREAM_HTTP_PORT``; a wildcard host means this machine). A key
(``OCRSTREAM_API_KEY``) is sent as ``Authorization: Bearer`` when set (:mod:`ocrstream.streaming.auth`).

Errors: :class:`DoorUnavailableError` when nothing answers at that address (the caller may use
the CLI door instead), :class:`DoorRefusedError` for any answer other than 200/202 and the
refusals of bad input (400/413/415/422, reported per file like the CLI door does).
"""

from __future__ import annotations

import json
import mimetypes
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3

from ocrstream import environment

if TYPE_CHECKING:
    from ocrstream.settings import Settings

__all__ = ["DoorAnswer", "DoorRefusedError", "DoorSettings", "DoorUnavailableError", "HttpDoor", "door_url"]

#: HTTP statuses of bad input at the door (services/ingest/http.py REFUSAL_STATUS, 422 other).
REFUSED_INPUT = (400, 413, 415, 422)
#: the door's longest ``?wait=`` (services/ingest/http.py MAX_WAIT_S), seconds.
MAX_DOOR_WAIT_S = 60.0
#: seconds to connect; loopback answers in milliseconds, a refused port at once.
CONNECT_TIMEOUT_S = 2.0
#: files posted at once (each one waits for its own result on the door).
MAX_IN_FLIGHT = 4
#: times a request is sent again (same Idempotency-Key) after its answer was lost.
RESENDS = 2


class DoorUnavailableError(ConnectionError):
    """Nothing answers at the ingest HTTP door's address (refused, unreachable, timed out)."""


class DoorRefusedError(RuntimeError):
    """The door answered with an unexpected status (401/403 key, 429 rate limit, 5xx, ...)."""

    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"ingest HTTP door answered {status}: {body[:300]}")


@dataclass(frozen=True)
class DoorAnswer:
    """The door's answer for one file.

    Attributes:
        filename: the file's name as submitted.
        status: ``accepted`` (202: queued; no result yet), ``reused`` (same bytes as a done
            document), ``done``/``failed`` (200: the result came within the wait) or
            ``rejected`` (bad input, ``error`` says why).
        document_id: the document's id (None when rejected: no document was made).
        object_key: the original's key in the bucket (None when rejected).
        result: the ``ocr.results.v1`` event as a JSON object (``done``/``failed`` only).
        error: ``(error type, message)`` of a rejection.
    """

    filename: str
    status: str
    document_id: str | None = None
    object_key: str | None = None
    result: dict[str, Any] | None = None
    error: tuple[str, str] | None = None


@dataclass(frozen=True)
class DoorSettings:
    """What a client of the ingest HTTP door needs of :class:`~ocrstream.settings.Settings`, the same
    variables with the same defaults (:mod:`ocrstream.environment`).

    Attributes:
        ingest_url: ``OCRSTREAM_INGEST_URL`` (None or empty: the door is at ``http_host:http_port``).
        http_host: ``OCRSTREAM_HTTP_HOST``, the address the ingest stage binds.
        http_port: ``OCRSTREAM_HTTP_PORT``.
        api_key: ``OCRSTREAM_API_KEY``, sent as ``Authorization: Bearer`` (None: no key).
        max_document_bytes: ``OCRSTREAM_MAX_DOCUMENT_BYTES``: larger files are refused before upload.
        s3_bucket: ``OCRSTREAM_S3_BUCKET``, named in the receipts ``submit`` prints.
    """

    ingest_url: str | None = None
    http_host: str = environment.DEFAULT_HTTP_HOST
    http_port: int = environment.DEFAULT_HTTP_PORT
    api_key: str | None = field(default=None, repr=False)
    max_document_bytes: int = environment.DEFAULT_MAX_DOCUMENT_BYTES
    s3_bucket: str = environment.DEFAULT_S3_BUCKET

    @classmethod
    def of(cls, settings: Settings) -> DoorSettings:
        """The door's settings out of a process's whole :class:`~ocrstream.settings.Settings`."""
        return cls(settings.ingest_url, settings.http_host, settings.http_port,
                   settings.api_key.get_secret_value() if settings.api_key is not None else None,
                   settings.max_document_bytes, settings.s3_bucket)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None
                         ) -> DoorSettings | None:
        """The door's settings read from the environment and the dotenv file without pydantic
        (:func:`ocrstream.environment.ocrstream_variables`), for a process with ``environ`` in ``cwd``
        (default: this one); None when a number is not plain decimal digits, so that the caller reads
        :class:`~ocrstream.settings.Settings`, whose validation names the bad variable.

        Raises:
            OSError: the dotenv file exists but cannot be read.
        """
        given = environment.ocrstream_variables(environ, cwd)
        port, max_bytes = given.get("http_port", str(cls.http_port)), given.get("max_document_bytes",
                                                                                str(cls.max_document_bytes))
        if not all(text.isascii() and text.isdigit() for text in (port, max_bytes)):
            return None
        return cls(given.get("ingest_url"), given.get("http_host", cls.http_host), int(port), given.get("api_key"),
                   int(max_bytes), given.get("s3_bucket", cls.s3_bucket))


def door_url(settings: DoorSettings | Settings) -> str:
    """Base URL of the ingest HTTP door: ``OCRSTREAM_INGEST_URL`` or the stage's bind address."""
    if settings.ingest_url:
        return settings.ingest_url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.http_host, settings.http_host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{settings.http_port}"


class HttpDoor:
    """A client of ``POST /v1/documents``; thread-safe (one urllib3 pool).

    Args:
        settings: where the door is and the API key to send (module doc); a process's whole
            :class:`~ocrstream.settings.Settings` is taken as its :meth:`DoorSettings.of`.
    """

    def __init__(self, settings: DoorSettings | Settings):
        settings = settings if isinstance(settings, DoorSettings) else DoorSettings.of(settings)
        self.settings = settings
        self.url = door_url(settings)
        self.max_bytes = settings.max_document_bytes
        self.headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.pool = urllib3.PoolManager(maxsize=MAX_IN_FLIGHT, retries=False)
        self.callback_url: str | None = None  # completion webhook of every submission (form field callback_url)

    def available(self) -> bool:
        """True when the door answers ``GET /healthz`` with 200 (within CONNECT_TIMEOUT_S)."""
        try:
            return self.pool.request("GET", self.url + "/healthz", headers=self.headers,
                                     timeout=urllib3.Timeout(CONNECT_TIMEOUT_S)).status == 200
        except urllib3.exceptions.HTTPError:
            return False

    def submit(self, path: Path, template: str | None = None, wait_s: float = 0.0) -> DoorAnswer:
        """Post one file and wait up to ``wait_s`` seconds (capped at MAX_DOOR_WAIT_S) for its result.
        A file over ``OCRSTREAM_MAX_DOCUMENT_BYTES`` is rejected here, without reading it whole.

        Raises:
            DoorUnavailableError: the door does not answer.
            DoorRefusedError: an answer other than 200/202 or a bad-input refusal.
            OSError: the file cannot be read.
        """
        wait_s = min(max(wait_s, 0.0), MAX_DOOR_WAIT_S)
        with path.open("rb") as f:
            data = f.read(self.max_bytes + 1)  # bounded: the door refuses more anyway (413)
        if len(data) > self.max_bytes:
            return DoorAnswer(path.name, "rejected", error=(
                "DocumentTooLargeError", f"{path.name} is larger than OCRSTREAM_MAX_DOCUMENT_BYTES ({self.max_bytes})"))
        fields: dict[str, Any] = {"file": (path.name, data,
                                           mimetypes.guess_type(path.name)[0] or "application/octet-stream")}
        if template:
            fields["template"] = template
        if self.callback_url:
            fields["callback_url"] = self.callback_url
        headers = {**self.headers, "Idempotency-Key": uuid.uuid4().hex}
        for resend in range(RESENDS + 1):
            try:
                response = self.pool.request(
                    "POST", f"{self.url}/v1/documents?wait={wait_s:g}", fields=fields, headers=headers,
                    timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=wait_s + 30.0))
            except urllib3.exceptions.ProtocolError as exc:  # sent, then the connection broke: resend
                if resend < RESENDS:
                    continue
                raise DoorUnavailableError(f"the ingest HTTP door at {self.url} broke the connection ({exc})") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise DoorUnavailableError(f"no ingest HTTP door answering at {self.url} ({exc})") from exc
            return _answer(path.name, response.status, response.data)
        raise AssertionError("unreachable")

    def submit_all(self, paths: Sequence[Path], template: str | None = None, wait_s: float = 0.0,
                   on_answer: Callable[[DoorAnswer], None] = lambda a: None) -> list[DoorAnswer]:
        """:meth:`submit` each file, at most MAX_IN_FLIGHT at once; answers in ``paths`` order."""
        def one(path: Path) -> DoorAnswer:
            answer = self.submit(path, template, wait_s)
            on_answer(answer)
            return answer

        if len(paths) == 1:
            return [one(paths[0])]
        with ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="submit") as pool:
            return list(pool.map(one, paths))


def _answer(filename: str, status: int, body: bytes) -> DoorAnswer:
    """The :class:`DoorAnswer` of an HTTP response (module doc for the statuses)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if status in REFUSED_INPUT and isinstance(data, dict) and isinstance(data.get("detail"), dict):
        detail = data["detail"]
        return DoorAnswer(filename, "rejected", error=(str(detail.get("error", "BadInputError")),
                                                       str(detail.get("message", ""))))
    if status not in (200, 202) or not isinstance(data, dict) or "document_id" not in data:
        raise DoorRefusedError(status, text)
    return DoorAnswer(filename, str(data.get("status", "accepted")), data["document_id"], data.get("object_key"),
                      data.get("result") if status == 200 else None)

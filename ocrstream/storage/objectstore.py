"""Object storage through the S3 API (MinIO SDK): originals and crops, the claim checks.

The SDK is synchronous; every call runs in a worker thread so the Kafka loop (and its
heartbeats) never blocks. Missing keys raise :class:`MissingObjectError` (permanent);
connection faults surface as urllib3 errors, which the stage loop retries with backoff.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from ocrstream.errors import MissingObjectError
from ocrstream.settings import Settings


class ObjectStore:
    """One bucket on an S3-compatible server."""

    def __init__(self, settings: Settings):
        # Few urllib3 retries: the stage loop owns retrying, with its own backoff and metrics.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=settings.s3_timeout_s, read=settings.s3_timeout_s),
            retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
            maxsize=16,
        )
        self.bucket = settings.s3_bucket
        self.client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=settings.s3_secure,
            region=settings.s3_region,
            http_client=http,
        )

    async def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet."""
        if not await asyncio.to_thread(self.client.bucket_exists, self.bucket):
            try:
                await asyncio.to_thread(self.client.make_bucket, self.bucket)
            except S3Error as exc:  # another stage created it meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` (overwrites: keys are content-addressed or per-document)."""
        await asyncio.to_thread(
            self.client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type
        )

    async def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises MissingObjectError if there are none."""
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                raise MissingObjectError(f"s3://{self.bucket}/{key} does not exist") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    async def list_keys(self, prefix: str, limit: int = 10_000) -> list[str]:
        """Keys under ``prefix`` (recursive, in key order), at most ``limit``."""
        return await asyncio.to_thread(self._list, prefix, limit)

    def _list(self, prefix: str, limit: int) -> list[str]:
        keys: list[str] = []
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            keys.append(obj.object_name)
            if len(keys) >= limit:
                break
        return keys

    async def list_modified(self, prefix: str, limit: int = 10_000) -> list[tuple[str, float]]:
        """``(key, last modified, epoch seconds)`` of the keys under ``prefix`` (recursive, in key
        order), at most ``limit``; the times are the object store's."""
        return await asyncio.to_thread(self._list_modified, prefix, limit)

    def _list_modified(self, prefix: str, limit: int) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name is not None and obj.last_modified is not None:
                found.append((obj.object_name, obj.last_modified.timestamp()))
            if len(found) >= limit:
                break
        return found

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (S3 DeleteObjects, 1,000 per request); a key already gone is no error.

        Raises:
            OSError: a key could not be deleted (the first error the server reported).
        """
        await asyncio.to_thread(self._delete, list(keys))

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys[start:start + 1000]]))
            if errors:
                first = errors[0]
                raise OSError(f"s3://{self.bucket}/{first.name} was not deleted: {first.code}: {first.message}")

    async def exists(self, key: str) -> bool:
        """True when ``key`` exists in the bucket."""
        try:
            await asyncio.to_thread(self.client.stat_object, self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise
        return True

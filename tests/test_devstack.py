"""End-to-end test of ocrstream.devstack: start the embedded stack and really use it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ocrstream.devstack import (
    EmbeddedStack,
    StackEndpoints,
    StackError,
    _minio_client,
    _proc_stat,
    create_topics,
    purge,
    read_running,
    stop_running,
)

CONSUMER_OPTS = dict(
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=6000,
    heartbeat_interval_ms=1000,
)


def _recorded_pids(state_dir: Path) -> list[int]:
    data = json.loads((state_dir / "stack.json").read_text())
    return [s["pid"] for s in data["services"]]


def _processes_under(path: Path) -> list[int]:
    """PIDs of live processes whose command line mentions ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                if str(path) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _alive(pid: int) -> bool:
    info = _proc_stat(pid)
    return info is not None and info[0] not in "ZX"  # a zombie is gone for our purposes


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=b"doc-1",
                                         headers=[("trace", f"t{i}".encode()), ("stage", b"test")])
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, group: str, count: int, timeout_s: float = 40):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, **CONSUMER_OPTS)
    await consumer.start()
    try:
        got = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.extend(records)
        assert len(got) == count, f"consumed {len(got)} of {count}"
        await consumer.commit()
        tp = TopicPartition(topic, got[0].partition)
        committed = await consumer.committed(tp)
        return got, committed
    finally:
        await consumer.stop()


def test_as_env_names() -> None:
    ep = StackEndpoints("127.0.0.1:1", "127.0.0.1:2", "ak", "sk", "postgresql://u:p@127.0.0.1:3/ocrstream")
    assert ep.as_env() == {
        "OCRSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "OCRSTREAM_S3_ENDPOINT": "127.0.0.1:2",
        "OCRSTREAM_S3_ACCESS_KEY": "ak",
        "OCRSTREAM_S3_SECRET_KEY": "sk",
        "OCRSTREAM_S3_SECURE": "false",
        "OCRSTREAM_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:3/ocrstream",
        "OCRSTREAM_KAFKA_IDEMPOTENT_PRODUCER": "false",
    }


@pytest.fixture(scope="module")
def devstack(tmp_path_factory):
    """A stack of our own (conftest's session ``stack`` must not be stopped here)."""
    st = EmbeddedStack(tmp_path_factory.mktemp("devstack"))
    st.start()
    yield st
    st.stop()


@pytest.mark.slow
async def test_kafka_produce_consume_commit(devstack: EmbeddedStack) -> None:
    ep = devstack.endpoints
    values = [b"page-0", b"page-1", b"page-2"]
    await _produce(ep.kafka_bootstrap, "devstack.roundtrip", values)
    got, committed = await _consume(ep.kafka_bootstrap, "devstack.roundtrip", "devstack-test", 3)
    assert [m.value for m in got] == values
    assert all(m.key == b"doc-1" for m in got)
    assert [dict(m.headers)["trace"] for m in got] == [b"t0", b"t1", b"t2"]
    assert committed == got[-1].offset + 1 == 3


@pytest.mark.slow
async def test_create_topics_sets_partitions(devstack: EmbeddedStack) -> None:
    bootstrap = devstack.endpoints.kafka_bootstrap
    assert await create_topics(bootstrap, ["devstack.two"], partitions=2) == ["devstack.two"]
    assert await create_topics(bootstrap, ["devstack.two"], partitions=2) == []  # exists: no error
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics(["devstack.two"])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 2


@pytest.mark.slow
def test_s3_roundtrip(devstack: EmbeddedStack) -> None:
    ep = devstack.endpoints
    client = _minio_client(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key)
    client.make_bucket("devstack-test")
    payload = b"\x89PNG fake image bytes" * 100
    client.put_object("devstack-test", "pages/p1.png", io.BytesIO(payload), len(payload),
                      content_type="image/png")
    response = client.get_object("devstack-test", "pages/p1.png")
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    assert [o.object_name for o in client.list_objects("devstack-test", recursive=True)] == ["pages/p1.png"]
    assert "devstack-test" in [b.name for b in client.list_buckets()]
    intruder = _minio_client(ep.s3_endpoint, ep.s3_access_key, "wrong-secret")
    with pytest.raises(Exception):
        intruder.list_buckets()


@pytest.mark.slow
async def test_postgres_roundtrip(devstack: EmbeddedStack) -> None:
    conn = await asyncpg.connect(devstack.endpoints.postgres_dsn)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "ocrstream"
        await conn.execute("create table devstack_t (id serial primary key, text text not null)")
        await conn.executemany("insert into devstack_t (text) values ($1)", [("a",), ("b",)])
        assert await conn.fetch("select text from devstack_t order by id") == [("a",), ("b",)]
    finally:
        await conn.close()


@pytest.mark.slow
def test_read_running_and_stop(devstack: EmbeddedStack) -> None:
    state_dir = devstack.state_dir
    assert read_running(state_dir) == devstack.endpoints
    assert all(p.name.endswith(".log") for p in (state_dir / "logs").glob("*.*"))
    pids = _recorded_pids(state_dir)
    assert len(pids) == 4 and all(_alive(pid) for pid in pids)  # kafka-s3 (the broker's log), kafka, s3, postgres
    devstack.stop()
    assert not any(_alive(pid) for pid in pids)
    assert _processes_under(state_dir) == []
    assert read_running(state_dir) is None
    assert not (state_dir / "stack.json").exists()
    devstack.stop()  # idempotent


@pytest.mark.slow
async def test_kafka_on_s3_and_stop_running(tmp_path: Path) -> None:
    """kafka_storage="s3": broker data lands in the bucket; `dev down` path stops it by PID."""
    st = EmbeddedStack(tmp_path, kafka_storage="s3", log=lambda line: None)
    ep = st.start()
    try:
        await _produce(ep.kafka_bootstrap, "devstack.s3", [b"x"])
        got, committed = await _consume(ep.kafka_bootstrap, "devstack.s3", "devstack-s3", 1)
        assert got[0].value == b"x" and committed == 1
        # the broker's log: on its own weed, never the users' S3 (whose filer notifies the broker)
        services = {x["name"]: x for x in json.loads((tmp_path / "stack.json").read_text())["services"]}
        log_s3 = f"127.0.0.1:{services['kafka-s3']['ports']['s3']}"
        client = _minio_client(log_s3, ep.s3_access_key, ep.s3_secret_key)
        keys = [o.object_name for o in client.list_objects("tansu", recursive=True)]
        assert any("/topics/devstack.s3/" in k for k in keys)
        assert not _minio_client(ep.s3_endpoint, ep.s3_access_key, ep.s3_secret_key).bucket_exists("tansu")
        pids = _recorded_pids(tmp_path)
        assert stop_running(tmp_path) is True  # as `ocrstream dev down` would, from stack.json
        assert not any(_alive(pid) for pid in pids)
        assert _processes_under(tmp_path) == []
        assert read_running(tmp_path) is None
        assert stop_running(tmp_path) is False
    finally:
        st.stop()


@pytest.mark.slow
def test_failing_service_raises_with_log_tail_and_cleans_up(tmp_path: Path) -> None:
    """A broken PostgreSQL data dir: start() raises StackError and stops S3 and Kafka again."""
    data = tmp_path / "pg" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("99\n")  # initdb skipped, postgres refuses the dir
    st = EmbeddedStack(tmp_path, log=lambda line: None)
    with pytest.raises(StackError) as err:
        st.start(timeout_s=30)
    assert "postgres exited" in str(err.value) and "--- tail of" in str(err.value)
    assert _processes_under(tmp_path) == []
    assert read_running(tmp_path) is None and not (tmp_path / "stack.json").exists()


@pytest.mark.slow
async def test_dead_services_come_back_on_their_ports_and_data(tmp_path: Path) -> None:
    """`dev up` on a stack whose broker and database were SIGKILLed: they come back on the
    same endpoints, nothing the broker acknowledged is lost (durable storage, the default),
    the database keeps its rows, and `dev down` keeps the data until `--purge`."""
    st = EmbeddedStack(tmp_path, log=lambda line: None)
    ep = st.start()
    try:
        await _produce(ep.kafka_bootstrap, "devstack.durable", [b"a", b"b", b"c"])
        conn = await asyncpg.connect(ep.postgres_dsn)
        await conn.execute("CREATE TABLE kept (x int)")
        await conn.execute("INSERT INTO kept VALUES (42)")
        await conn.close()
        recorded = {s["name"]: s["pid"] for s in json.loads((tmp_path / "stack.json").read_text())["services"]}
        for name in ("kafka", "postgres"):
            os.killpg(recorded[name], signal.SIGKILL)
            os.waitpid(recorded[name], 0)  # reap (this test process started them; dev up's exits)
        await asyncio.sleep(0.5)  # the killed groups' last members go
        assert read_running(tmp_path) is None  # not every service is up

        again = EmbeddedStack(tmp_path, log=lambda line: None).start()  # what `dev up` runs
        assert again == ep  # same endpoints: clients keep their settings
        assert _alive(recorded["s3"])  # the live service was adopted, not restarted
        got, _ = await _consume(ep.kafka_bootstrap, "devstack.durable", "devstack-durable", 3)
        assert [r.value for r in got] == [b"a", b"b", b"c"]
        conn = await asyncpg.connect(ep.postgres_dsn)
        assert await conn.fetchval("SELECT x FROM kept") == 42
        await conn.close()
    finally:
        stop_running(tmp_path)
        st.stop()
    assert (tmp_path / "pg" / "data").is_dir()  # dev down keeps data
    assert purge(tmp_path) is True and not tmp_path.exists()


@pytest.mark.slow
def test_dev_down_then_up_keeps_every_endpoint(tmp_path: Path) -> None:
    """`dev down` then `dev up` on the same state dir: every service comes back on the port it had
    (ports.json), so stages still running keep working; a port taken meanwhile gets a new one."""
    import socket

    lines: list[str] = []
    st = EmbeddedStack(tmp_path, log=lines.append)
    first = st.start()
    ports = json.loads((tmp_path / "ports.json").read_text())
    assert set(ports) == {"kafka-s3", "kafka", "s3", "postgres"}
    assert stop_running(tmp_path) is True and read_running(tmp_path) is None  # dev down
    st = EmbeddedStack(tmp_path, log=lines.append)
    try:
        assert st.start() == first  # dev up: the same endpoints
        assert json.loads((tmp_path / "ports.json").read_text()) == ports
    finally:
        stop_running(tmp_path)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's TIME_WAITs
    squatter.bind(("127.0.0.1", ports["postgres"]["postgres"]))
    squatter.listen(1)
    try:
        st = EmbeddedStack(tmp_path, log=lines.append)
        moved = st.start()
        assert moved.kafka_bootstrap == first.kafka_bootstrap and moved.s3_endpoint == first.s3_endpoint
        assert moved.postgres_dsn != first.postgres_dsn
        assert any("postgres: its recorded port(s)" in line and "taken" in line for line in lines)
    finally:
        stop_running(tmp_path)
        squatter.close()

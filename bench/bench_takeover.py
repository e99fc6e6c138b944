"""Take-over after a crash: how long a consumer group leaves partitions unserved after a member
is SIGKILLed, by session timeout and static membership, on the embedded broker (tansu).

    .venv/bin/python bench/bench_takeover.py [--repeat 2]

Two cases, each for several group settings (every member is a separate Python process running
an aiokafka consumer, as the stages do):

* ``restart``: the only member of a group is SIGKILLed and started again at once (what the fault
  suite and a supervisor do); one record is produced to each of the 4 partitions; the time from
  the kill until the new process has received all 4.
* ``replica``: one of two members is SIGKILLed and not restarted; one record per partition;
  the time until the survivor has received all 4 (the dead member's partitions need a rebalance).

Settings: the session timeout (6 s in the tests, 10 s by default) and static membership
(``group_instance_id``, KIP-345: a restarted member with the same instance id takes back its
partitions without waiting for the old one's session to expire). Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaProducer  # noqa: E402

from ocrstream.devstack import EmbeddedStack, create_topics  # noqa: E402

TOPIC = "bench.takeover"
PARTITIONS = 4

MEMBER = r"""
import asyncio, json, sys, time
from aiokafka import AIOKafkaConsumer
bootstrap, group, session_ms, instance = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
async def main():
    c = AIOKafkaConsumer("%s", bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=session_ms,
                         heartbeat_interval_ms=max(300, session_ms // 6), group_instance_id=instance)
    await c.start()
    print(json.dumps({"started": time.time()}), flush=True)
    while True:
        polled = await c.getmany(timeout_ms=200)
        for tp, recs in polled.items():
            for r in recs:
                print(json.dumps({"p": tp.partition, "v": r.value.decode(), "t": time.time()}), flush=True)
        if polled:
            await c.commit()
asyncio.run(main())
""" % TOPIC


class Member:
    """A consumer process; its received records as (partition, value, wall time)."""

    def __init__(self, bootstrap: str, group: str, session_ms: int, instance: str | None):
        self.proc = subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, group, str(session_ms), instance or ""],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[dict] = []
        self._reader = asyncio.get_running_loop().run_in_executor(None, self._read)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def got(self, marker: str) -> set[int]:
        return {r["p"] for r in self.lines if r.get("v") == marker}

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


async def produce_markers(bootstrap: str, marker: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(PARTITIONS):
            await producer.send_and_wait(TOPIC, marker.encode(), partition=p)
    finally:
        await producer.stop()


async def wait_all(members: list[Member], marker: str, timeout_s: float = 60) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if set().union(*(m.got(marker) for m in members)) == set(range(PARTITIONS)):
            return time.monotonic()
        await asyncio.sleep(0.05)
    return None


async def warm(bootstrap: str, members: list[Member]) -> None:
    """Wait until the group is formed and serves every partition."""
    marker = f"warm-{uuid.uuid4().hex[:6]}"
    await produce_markers(bootstrap, marker)
    if await wait_all(members, marker, 90) is None:
        raise RuntimeError("group never served all partitions")
    await asyncio.sleep(2)


async def one(bootstrap: str, case: str, session_ms: int, static: bool) -> float | None:
    group = f"takeover-{uuid.uuid4().hex[:8]}"
    ids = [f"m{i}" if static else None for i in range(2)]
    members = [Member(bootstrap, group, session_ms, ids[0])]
    if case == "replica":
        members.append(Member(bootstrap, group, session_ms, ids[1]))
    try:
        await warm(bootstrap, members)
        killed_at = time.monotonic()
        members[0].kill()
        if case == "restart":
            members[0] = Member(bootstrap, group, session_ms, ids[0])
            survivors = [members[0]]
        else:
            survivors = members[1:]
        marker = f"after-{uuid.uuid4().hex[:6]}"
        await produce_markers(bootstrap, marker)
        done = await wait_all(survivors, marker, 60)
        return None if done is None else done - killed_at
    finally:
        for m in members:
            if m.proc.poll() is None:
                m.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sessions", default="6000,3000", help="session timeouts (ms) to try, comma-separated")
    args = ap.parse_args()
    variants = [(int(s), static) for s in args.sessions.split(",") for static in (False, True)]
    with tempfile.TemporaryDirectory(prefix="takeover-") as tmp:
        with EmbeddedStack(Path(tmp), kafka_storage="memory", log=lambda m: None) as stack:
            bootstrap = stack.endpoints.kafka_bootstrap
            asyncio.run(create_topics(bootstrap, [TOPIC], partitions=PARTITIONS))
            rows = []
            for case in ("restart", "replica"):
                for session_ms, static in variants:
                    times = [asyncio.run(one(bootstrap, case, session_ms, static)) for _ in range(args.repeat)]
                    ok = [t for t in times if t is not None]
                    rows.append((case, session_ms, static, ok, len(times) - len(ok)))
                    print(f"  {case:8s} session {session_ms} ms static={static}: "
                          f"{', '.join(f'{t:.1f}' for t in ok)} s, {len(times) - len(ok)} timed out", flush=True)
    print("\n| case | session timeout | static membership | take-over (median, s) | runs | timed out (60 s) |")
    print("|---|---|---|---|---|---|")
    for case, session_ms, static, ok, failed in rows:
        med = f"{statistics.median(ok):.1f}" if ok else "-"
        print(f"| {case} | {session_ms / 1000:g} s | {'yes' if static else 'no'} | {med} | {len(ok)} | {failed} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()

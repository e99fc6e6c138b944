"""Broker hop latency at low load for several ``fetch_max_wait_ms`` values, and its idle cost.

    .venv/bin/python bench/bench_fetch_wait.py [--values 500 200 100 50] [--n 8]

Starts an embedded stack (tansu), then for each value: one consumer (partition assigned, no
group) waits on an idle topic while a producer sends one record at a time at irregular
intervals; prints the producer's ack time and the time from the ack until the consumer has the
record (ms, sorted), then the CPU-seconds the broker process and this process spend in 10 s of
idle polling. Real Kafka completes a waiting fetch as soon as a record arrives; tansu 0.6 only
after up to ~100 ms, so aiokafka's 500 ms default costs every hop of a document that much
(what ``OCRSTREAM_KAFKA_FETCH_MAX_WAIT_MS`` trades against idle CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ocrstream.devstack import EmbeddedStack

TOPIC = "bench-fetch-wait"


def _cpu(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


async def measure(bootstrap: str, wait_ms: int, n: int, broker: list[psutil.Process],
                  producer: AIOKafkaProducer) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        await consumer.getmany(timeout_ms=2000)
        acks, hops = [], []
        for i in range(n):
            await asyncio.sleep(0.137 * (i % 3 + 1))
            t0 = time.perf_counter()
            await producer.send_and_wait(TOPIC, b"x")
            t1 = time.perf_counter()
            while not await consumer.getmany(timeout_ms=3000):
                pass
            acks.append(round((t1 - t0) * 1000))
            hops.append(round((time.perf_counter() - t1) * 1000))
        b0, c0 = _cpu(broker), time.process_time()
        await asyncio.sleep(10)
        print(f"fetch_max_wait_ms={wait_ms:>5}: ack->consumed median {statistics.median(hops):>4.0f} ms "
              f"{sorted(hops)}; produce ack {sorted(acks)} ms; idle 10 s: broker {_cpu(broker) - b0:.3f} "
              f"CPU-s, consumer {time.process_time() - c0:.3f} CPU-s", flush=True)
    finally:
        await consumer.stop()


async def run(bootstrap: str, values: list[int], n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    broker = [p for p in psutil.Process().children(recursive=True) if "tansu" in " ".join(p.cmdline())]  # this stack only
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        for wait_ms in values:
            await measure(bootstrap, wait_ms, n, broker, producer)
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, nargs="+", default=[500, 200, 100, 50])
    parser.add_argument("--n", type=int, default=8, help="records per value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStack(Path(tmp) / "stack", log=lambda m: None) as stack:
        asyncio.run(run(stack.start().kafka_bootstrap, args.values, args.n))


if __name__ == "__main__":
    main()

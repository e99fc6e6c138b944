"""Consumer-group lag seen from outside the stages (``ocrstream lag-exporter``).

A stage reports its own lag (``ocrstream_consumer_lag``) only while it runs; an operator also
needs the lag of a group whose consumers are all dead, and an autoscaler needs it to start the
first replica. This module reads, for each stage's consumer group, the committed offset of
every partition of its input topics and the partition's log end, and exports

* ``ocrstream_group_lag{stage, group, topic, partition}`` = high-water mark - committed offset
  (committed offset 0 when the group never committed: it starts from the earliest offset),
* ``ocrstream_group_committed_offset{...}`` and ``ocrstream_topic_high_watermark{topic, partition}``.

How, given the embedded broker's quirks (see :mod:`ocrstream.devstack`):

* the log end is the **fetch high-water mark**: a group-less consumer is assigned the
  partitions, seeks each to the group's committed offset, fetches (at most one record per
  partition) and reads :meth:`AIOKafkaConsumer.highwater` - tansu reports wrong
  ``end_offsets`` after a batched produce, so ListOffsets is never used;
* committed offsets come from ``AIOKafkaConsumer.committed()`` of a consumer that carries the
  group id but never subscribes (so it never joins the group nor triggers a rebalance);
  ``AIOKafkaAdminClient.list_consumer_group_offsets`` fails against tansu.

Both are :mod:`ocrstream.streaming.offsets` (the one implementation of these readers).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from ocrstream.contracts import events
from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.settings import Settings
from ocrstream.streaming import offsets

log = logging.getLogger(__name__)



def stage_inputs(settings: Settings) -> dict[str, tuple[str, ...]]:
    """:data:`ocrstream.contracts.stages.STAGE_INPUTS` with ingest's bucket-notifications topic when the bucket door is on."""
    topic = settings.bucket_notifications_topic
    return {**STAGE_INPUTS, "ingest": (events.RAW, topic)} if topic else dict(STAGE_INPUTS)

GROUP_LAG = Gauge("ocrstream_group_lag", "Consumer-group lag: fetch high-water mark minus committed offset",
                  ["stage", "group", "topic", "partition"])
GROUP_COMMITTED = Gauge("ocrstream_group_committed_offset", "Committed offset of a consumer group",
                        ["stage", "group", "topic", "partition"])
HIGH_WATERMARK = Gauge("ocrstream_topic_high_watermark", "Fetch high-water mark of a partition",
                       ["topic", "partition"])
EXPORTER_ERRORS = Counter("ocrstream_lag_exporter_errors_total", "Failed lag refreshes", ["stage"])


@dataclass(frozen=True)
class PartitionLag:
    """Offsets of one partition for one group: ``lag = highwater - committed`` (messages)."""

    topic: str
    partition: int
    committed: int
    highwater: int

    @property
    def lag(self) -> int:
        return max(0, self.highwater - self.committed)


class LagReader:
    """Reads committed offsets and fetch high-water marks for consumer groups (see module doc),
    with the readers of :mod:`ocrstream.streaming.offsets`; clients are kept open between refreshes.

    ``fetch_timeout_ms``: how long one refresh waits for fetch answers of all partitions.
    """

    def __init__(self, settings: Settings, fetch_timeout_ms: int = 5000):
        self.settings, self.fetch_timeout_ms = settings, fetch_timeout_ms
        # one record per partition at most: only the fetch answers' high-water marks are wanted
        self.fetcher = offsets.probe_consumer(settings, max_partition_fetch_bytes=1024)
        self.groups: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        await self.fetcher.start()

    async def close(self) -> None:
        for consumer in [self.fetcher, *self.groups.values()]:
            await consumer.stop()

    async def __aenter__(self) -> "LagReader":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _group_consumer(self, group: str) -> AIOKafkaConsumer:
        if group not in self.groups:
            consumer = offsets.probe_consumer(self.settings, group)
            await consumer.start()
            self.groups[group] = consumer
        return self.groups[group]

    async def partitions(self, topics: tuple[str, ...]) -> list[TopicPartition]:
        """Every partition of ``topics`` (fresh metadata from the broker; unknown topics have none)."""
        return await offsets.partitions_of(self.fetcher, topics)

    async def read(self, group: str, topics: tuple[str, ...]) -> list[PartitionLag]:
        """Lag of ``group`` on every partition of ``topics`` (committed offset 0 when none)."""
        tps = await self.partitions(topics)
        if not tps:
            return []
        committed = {tp: offset or 0 for tp, offset in
                     (await offsets.committed(await self._group_consumer(group), tps)).items()}
        highwater = await self.highwaters(committed)
        return [PartitionLag(tp.topic, tp.partition, committed[tp], max(highwater[tp], committed[tp]))
                for tp in tps]

    async def highwaters(self, start: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Fetch high-water mark of each partition, fetching from ``start[tp]`` (see
        :func:`ocrstream.streaming.offsets.fetch_highwaters`). Raises TimeoutError."""
        fetcher = self.fetcher
        assert fetcher is not None, "LagReader.start() first"
        fetcher.assign(list(start))
        fetcher.resume(*start)
        try:
            return await offsets.fetch_highwaters(fetcher, list(start), start=start,
                                                  timeout_s=self.fetch_timeout_ms / 1000)
        finally:
            fetcher.pause(*start)  # no background prefetching between refreshes


class LagExporter:
    """Refreshes the ``ocrstream_group_*`` gauges of every stage's group (``settings``'s prefix)."""

    def __init__(self, settings: Settings, stages: dict[str, tuple[str, ...]] | None = None):
        self.settings, self.stages = settings, stages or stage_inputs(settings)
        self.series: set[tuple[str, str, str, str]] = set()

    def group(self, stage: str) -> str:
        return f"{self.settings.consumer_group_prefix}-{stage}"

    async def refresh(self, reader: LagReader) -> None:
        """One pass over all groups; a group that fails keeps its last values and counts an error."""
        for stage, topics in self.stages.items():
            group = self.group(stage)
            try:
                rows = await reader.read(group, topics)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other groups
                EXPORTER_ERRORS.labels(stage).inc()
                log.warning("lag of %s: %s: %s", group, type(exc).__name__, exc)
                continue
            for row in rows:
                labels = (stage, group, row.topic, str(row.partition))
                GROUP_LAG.labels(*labels).set(row.lag)
                GROUP_COMMITTED.labels(*labels).set(row.committed)
                HIGH_WATERMARK.labels(row.topic, str(row.partition)).set(row.highwater)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``lag_exporter_interval_s`` until ``stop``."""
        for stage in self.stages:
            EXPORTER_ERRORS.labels(stage)
        async with LagReader(self.settings) as reader:
            while not stop.is_set():
                await self.refresh(reader)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.settings.lag_exporter_interval_s)
                except asyncio.TimeoutError:
                    pass

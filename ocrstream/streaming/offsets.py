"""Topic positions and consumer groups seen from outside: high-water marks, committed offsets, members.

The one implementation every reader of positions uses: the results reader (a start position
taken before submitting, :mod:`ocrstream.streaming.results`), ``ocrstream status`` (consumer lag, group
members), the lag exporter (:mod:`ocrstream.streaming.lag`), dead-letter replay and the delivery audit
(:mod:`ocrstream.ops.dlq`, :mod:`ocrstream.ops.audit`). Every client it makes carries the security options
of :func:`ocrstream.streaming.kafka.client_options` (TLS, SASL).

Three rules come from the embedded broker (tansu, see :mod:`ocrstream.devstack`) and hold on
Kafka too:

* the end of a partition is the **fetch high-water mark** (``highwater`` of a fetch response),
  never ``end_offsets``/``seek_to_end``: tansu answers ListOffsets(latest) with a lower offset
  after a batched produce;
* committed offsets are read with a consumer's ``committed()`` (an OffsetFetch of the group,
  without joining it); aiokafka's ``list_consumer_group_offsets`` fails against tansu;
* group members come from DescribeGroups pinned to v0-v2: aiokafka 0.14 decodes a v3 answer
  with the v2 schema and fails ("Buffer underrun").

This is the one module that uses aiokafka's non-public API (``aiokafka.client``,
``aiokafka.protocol``, a consumer's ``_client``): pyproject.toml allows aiokafka only within the
minor release these calls were checked against, and a unit test keeps every other module off it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import KafkaTimeoutError
from aiokafka.protocol.admin import DescribeGroupsRequest_v0, DescribeGroupsRequest_v1, DescribeGroupsRequest_v2
from aiokafka.protocol.api import Request

from ocrstream.settings import Settings
from ocrstream.streaming.kafka import client_options

#: Bytes a position probe may read (the first records of each partition are fetched only to
#: learn the high-water mark; Kafka and tansu still return one whole batch if it is larger).
PROBE_FETCH_BYTES = 1024 * 1024


async def bootstrap_client(options: Mapping[str, Any]) -> AIOKafkaClient:
    """A low-level client (``options``: :func:`~ocrstream.streaming.kafka.client_options` plus e.g.
    ``request_timeout_ms``) after its bootstrap (ApiVersions + Metadata); closed again and the
    error raised if the bootstrap fails (e.g. KafkaConnectionError). The caller closes it."""
    client = AIOKafkaClient(**options)
    try:
        await client.bootstrap()
    except BaseException:
        await client.close()
        raise
    return client


async def topic_names(options: Mapping[str, Any]) -> set[str]:
    """The names of every topic of the cluster: one metadata request on a client of its own."""
    client = await bootstrap_client(options)
    try:
        return set((await client.fetch_all_metadata()).topics())
    finally:
        await client.close()


async def partitions_of(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of ``topics`` known to the cluster now (topics that do not exist are skipped).

    One metadata request for all topics, read from its answer: the consumer's own metadata only
    follows the topics it is assigned, so a reused consumer would miss the others.
    """
    cluster = await consumer._client.fetch_all_metadata()  # aiokafka has no public per-topic refresh
    return [TopicPartition(topic, p) for topic in topics
            for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def fetch_highwaters(consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], *,
                           start: Mapping[TopicPartition, int] | None = None,
                           timeout_s: float = 10.0) -> dict[TopicPartition, int]:
    """The high-water mark (offset of the next record to be written) of each partition.

    ``consumer`` must be group-less and own ``partitions`` (``assign``, not paused): each is
    fetched from ``start[tp]`` (default: its beginning) until a fetch response *of this call*
    has reported its high-water mark (so a long-lived consumer never returns a stale one); the
    records read meanwhile are dropped, at most one per partition is returned by each poll. Takes
    one fetch round trip when the partitions hold data, up to the consumer's
    ``fetch_max_wait_ms`` when they are empty. Raises KafkaTimeoutError after ``timeout_s`` seconds.
    """
    if not partitions:
        return {}
    if start is None:
        await consumer.seek_to_beginning(*partitions)
    else:
        for tp in partitions:
            consumer.seek(tp, start[tp])
    since_ms = int(time.time() * 1000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    known: dict[TopicPartition, int] = {}
    while missing := [tp for tp in partitions if tp not in known]:
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaTimeoutError(f"no fetch response for {missing} within {timeout_s:g} s")
        await consumer.getmany(*missing, timeout_ms=10, max_records=1)
        for tp in missing:
            highwater = consumer.highwater(tp)
            if highwater is not None and (consumer.last_poll_timestamp(tp) or 0) >= since_ms:
                known[tp] = highwater
    return known


def probe_consumer(settings: Settings, group_id: str | None = None, *,
                   fetch_max_wait_ms: int = 50, **options: Any) -> AIOKafkaConsumer:
    """A consumer that never joins a group and never commits (``group_id`` only for
    :func:`committed`), with the security options of :func:`client_options`; ``options``
    override its defaults (e.g. ``max_partition_fetch_bytes``)."""
    return AIOKafkaConsumer(**{
        **client_options(settings), "request_timeout_ms": 10_000,
        "group_id": group_id, "enable_auto_commit": False, "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": fetch_max_wait_ms, "fetch_max_bytes": PROBE_FETCH_BYTES,
        "max_partition_fetch_bytes": settings.max_message_bytes, **options})


async def committed(consumer: AIOKafkaConsumer,
                    partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The offsets the group of ``consumer`` (a :func:`probe_consumer` with a group id, never
    subscribed) committed on ``partitions``: an OffsetFetch, no group join (None: nothing committed)."""
    return {tp: await consumer.committed(tp) for tp in partitions}


async def committed_offsets(settings: Settings, group_id: str,
                            partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
    """:func:`committed` of ``group_id`` with a consumer of its own."""
    consumer = probe_consumer(settings, group_id)
    await consumer.start()
    try:
        return await committed(consumer, partitions)
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class GroupDescription:
    """A consumer group as its coordinator describes it: state (``Stable``, ``Empty``,
    ``PreparingRebalance``, ``Dead``...) and the member ids of the processes in it."""

    group_id: str
    state: str
    members: tuple[str, ...]


class _DescribeGroups(Request[DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]):
    """DescribeGroups limited to v0-v2 (see the module docstring)."""

    API_KEY = 15

    def __init__(self, groups: list[str]):
        self.groups = groups

    def build(self, request_struct_class: Any) -> Any:
        return request_struct_class(self.groups)


async def describe_groups(settings: Settings, group_ids: Sequence[str]) -> dict[str, GroupDescription]:
    """State and members of each group, keyed by group id (unknown groups: state ``Dead``)."""
    client = AIOKafkaClient(**{**client_options(settings), "request_timeout_ms": 10_000})
    await client.bootstrap()
    try:
        out = {}
        for group_id in group_ids:
            node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
            response = await client.send(node, _DescribeGroups([group_id]))
            for _error_code, group, state, _protocol_type, _protocol, members, *_ in response.groups:
                out[group] = GroupDescription(group, state or "Dead", tuple(m[0] for m in members))
        return out
    finally:
        await client.close()

"""Delivery attempts per record, counted durably so that a poison message is found even
when it kills the process (OOM, segfault) rather than raising.

Before a stage handles records, the runtime adds one to the count of every offset it is about
to handle. A batch that completes is committed past those offsets, which are then forgotten, so
a stored count is the number of attempts that began and never finished (the process crashed,
was killed or hung, or the handler timed out). When a partition holds such a record, the
runtime handles that partition one record at a time, and a record whose count reached
``max_delivery_attempts`` is dead-lettered without being handled again
(:class:`~ocrstream.errors.PoisonMessageError`).

Why not Kafka itself: offset-commit metadata would be the natural place, but the embedded broker
(tansu) stores commits without their metadata (probed with aiokafka 0.14). The ledger lives in
the object store, which every stage already uses, under ``_runtime/attempts/<group>/<topic>/<p>``
(one small JSON object per partition), so replicas of a stage share it across rebalances.
"""

from __future__ import annotations

import json

from aiokafka import TopicPartition

from ocrstream.errors import MissingObjectError
from ocrstream.storage.objectstore import ObjectStore


class DeliveryAttempts:
    """The ledger of one consumer group (see module doc); caches what it read and wrote.

    Per partition it keeps ``{offset: unfinished attempts}`` for offsets not yet committed (at
    most one poll's worth of records).
    """

    def __init__(self, store: ObjectStore, group: str):
        self.store, self.group = store, group
        self._known: dict[TopicPartition, dict[int, int]] = {}

    def _key(self, tp: TopicPartition) -> str:
        return f"_runtime/attempts/{self.group}/{tp.topic}/{tp.partition}.json"

    async def unfinished(self, tp: TopicPartition) -> dict[int, int]:
        """``{offset: attempts begun and never finished}`` of ``tp`` (from the store once).

        Raises the object store's transient errors.
        """
        if tp not in self._known:
            try:
                raw = json.loads(await self.store.get(self._key(tp)))
                self._known[tp] = {int(k): int(v) for k, v in raw.get("unfinished", {}).items()}
            except (MissingObjectError, ValueError, AttributeError):
                self._known[tp] = {}
        return self._known[tp]

    async def begin(self, tp: TopicPartition, offsets: list[int]) -> None:
        """Count one more attempt at each of ``offsets`` (sorted, of ``tp``), durably.

        Offsets below the first of them are dropped (they were committed). Raises the object
        store's transient errors (then nothing is handled).
        """
        if not offsets:
            return
        counts = {o: n for o, n in (await self.unfinished(tp)).items() if o >= offsets[0]}
        for o in offsets:
            counts[o] = counts.get(o, 0) + 1
        await self.store.put(self._key(tp), json.dumps({"unfinished": counts}).encode(), "application/json")
        self._known[tp] = counts

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop cached entries of revoked partitions (a new owner reads the stored ones)."""
        for tp in partitions:
            self._known.pop(tp, None)

"""Delivery attempts per record, counted durably so that a poison message is found even
when it kills the process (OOM, segfault) rather than raising.

The ledger of a partition says which process holds it and which records were begun and never
finished. It is written when something changes, not for every batch (issue 22: one object-store
write per partition per batch was four PUTs per document, each also a bucket notification
through the broker on the embedded stack):

* **Held.** Before the first batch of a partition after it was assigned, the process marks the
  partition held by it with its batches *untracked* (one write). Its later clean batches write
  nothing; a batch that completes is committed past its offsets.
* **Released.** When the partition is revoked after its batch committed, or the process stops,
  the ledger is written again with no holder and the exact counts (one write).
* **Inherited.** A process that finds a partition still held by another process with untracked
  batches knows that process ended without releasing it (crashed, was killed or hung) while it
  may have had a batch in hand: that batch started at the committed offset and held at most the
  holder's ``batch_max`` records, so each offset of ``[committed, committed + batch_max)``
  inherits one unfinished attempt (an over-approximation: a record after the real batch's end
  is handled alone once, for nothing).
* **Counted.** A partition holding records begun before and never finished is handled one
  record at a time, and each of those attempts is written before it begins (then the batches
  are *tracked*: the counts are exact), until the partition has none left.
* **Timed out.** A batch that timed out in this process counts one attempt for each of its
  records (in memory; written with the next write).

A record whose count reached ``max_delivery_attempts`` is dead-lettered without being handled
again (:class:`~ocrstream.errors.PoisonMessageError`): after as many crashes on it as before
this design (the first crash is inherited, the next ones counted).

Why not Kafka itself: offset-commit metadata would be the natural place, but the embedded broker
(tansu) stores commits without their metadata (probed with aiokafka 0.14). The ledger lives in
the object store, which every stage already uses, under ``_runtime/attempts/<group>/<topic>/<p>``
(one small JSON object per partition: ``{"unfinished": {offset: n}, "holder": str | null,
"untracked": bool, "batch_max": int}``; a ledger with only ``unfinished``, as written before,
reads as released), so replicas of a stage share it across rebalances.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from ocrstream.errors import MissingObjectError
from ocrstream.storage.objectstore import ObjectStore

#: ``batch_max`` assumed for a stored ledger that does not say it (aiokafka's largest poll).
DEFAULT_BATCH_MAX = 500


@dataclass
class _Partition:
    """What this process knows of one partition's ledger: the counts (``{offset: attempts begun
    and never finished}``), whether the stored ledger says this process holds it with untracked
    batches, and the offsets of the clean batch in hand (not counted unless it times out)."""

    counts: dict[int, int]
    held_untracked: bool = False
    uncounted: list[int] = field(default_factory=list)


class DeliveryAttempts:
    """The ledger of one consumer group for one process (see the module doc).

    ``batch_max`` is the most records this process hands a stage in one batch (the runner's
    ``poll_max_records``): a process inheriting one of its partitions after a crash counts that
    many offsets as possibly begun. Methods raise the object store's transient errors (then
    nothing is handled: the runner retries).
    """

    def __init__(self, store: ObjectStore, group: str, *, batch_max: int = 16):
        self.store, self.group, self.batch_max = store, group, batch_max
        self.holder = uuid.uuid4().hex  # this process
        self._known: dict[TopicPartition, _Partition] = {}

    def _key(self, tp: TopicPartition) -> str:
        return f"_runtime/attempts/{self.group}/{tp.topic}/{tp.partition}.json"

    async def unfinished(self, tp: TopicPartition, committed: int) -> dict[int, int]:
        """``{offset: attempts begun and never finished}`` of ``tp``, read from the store once per
        assignment; ``committed`` is the partition's committed offset (the first record polled
        after the assignment): offsets below it are dropped, and when another process still
        holds the partition with untracked batches, ``[committed, committed + its batch_max)``
        inherit one attempt each."""
        if tp not in self._known:
            self._known[tp] = _Partition(await self._load(tp, committed))
        return self._known[tp].counts

    async def _load(self, tp: TopicPartition, committed: int) -> dict[int, int]:
        try:
            raw = json.loads(await self.store.get(self._key(tp)))
            counts = {int(k): int(v) for k, v in raw.get("unfinished", {}).items() if int(k) >= committed}
            crashed = bool(raw.get("holder")) and raw["holder"] != self.holder and bool(raw.get("untracked"))
            batch_max = int(raw.get("batch_max", DEFAULT_BATCH_MAX))
        except (MissingObjectError, ValueError, AttributeError, TypeError):
            return {}
        if crashed:
            for offset in range(committed, committed + max(batch_max, 1)):
                counts[offset] = counts.get(offset, 0) + 1
        return counts

    async def begin_batch(self, tp: TopicPartition, offsets: list[int]) -> None:
        """A clean batch of ``offsets`` (sorted, of ``tp``, none begun before) is about to be
        handled: the first one after the assignment (or after records were counted) marks the
        partition held with untracked batches, durably; the next ones write nothing."""
        if not offsets:
            return
        state = self._known.setdefault(tp, _Partition({}))
        state.counts = {o: n for o, n in state.counts.items() if o >= offsets[0]}
        if not state.held_untracked:
            await self._write(tp, state.counts, holder=self.holder, untracked=True)
            state.held_untracked = True
        state.uncounted = list(offsets)

    async def begin_alone(self, tp: TopicPartition, offset: int) -> None:
        """One more attempt at ``offset`` (of ``tp``, handled alone), written before it begins."""
        state = self._known.setdefault(tp, _Partition({}))
        counts = {o: n for o, n in state.counts.items() if o >= offset}
        counts[offset] = counts.get(offset, 0) + 1
        await self._write(tp, counts, holder=self.holder, untracked=False)
        state.counts, state.held_untracked, state.uncounted = counts, False, []

    def finished(self, committed: dict[TopicPartition, int]) -> None:
        """The batch in hand committed: ``{partition: next offset}``; its records and every count
        below the committed offsets are done with."""
        for tp, offset in committed.items():
            state = self._known.get(tp)
            if state is not None:
                state.uncounted = []
                state.counts = {o: n for o, n in state.counts.items() if o >= offset}

    def timed_out(self, partitions: Iterable[TopicPartition]) -> None:
        """The batch in hand on ``partitions`` timed out: each of its uncounted records counts one
        attempt (kept in memory, written with the partition's next write)."""
        for tp in partitions:
            state = self._known.get(tp)
            if state is not None:
                for offset in state.uncounted:
                    state.counts[offset] = state.counts.get(offset, 0) + 1
                state.uncounted = []

    async def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Give up ``partitions`` after their last batch committed or was abandoned: the ledger
        of each one this process marked held says no holder and the exact counts (a record of an
        abandoned batch counts one attempt, as if it had timed out). Forgets them."""
        for tp in list(partitions):
            state = self._known.pop(tp, None)
            if state is None:
                continue
            for offset in state.uncounted:
                state.counts[offset] = state.counts.get(offset, 0) + 1
            await self._write(tp, state.counts, holder=None, untracked=False)

    def held(self) -> set[TopicPartition]:
        """The partitions whose ledger this process read or wrote since their assignment."""
        return set(self._known)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is known of ``partitions`` without writing (a new owner reads the store)."""
        for tp in partitions:
            self._known.pop(tp, None)

    async def _write(self, tp: TopicPartition, counts: dict[int, int], *, holder: str | None,
                     untracked: bool) -> None:
        body = {"unfinished": {str(o): n for o, n in sorted(counts.items())}, "holder": holder,
                "untracked": untracked, "batch_max": self.batch_max}
        await self.store.put(self._key(tp), json.dumps(body).encode(), "application/json")

"""The stage runner's delivery rules (ocrstream/streaming/stage.py), one micro-batch at a time against
fakes (tests/unit/fakes.py): commit only after acks, capped retries with backoff, typed dead
letters, poison isolation through the delivery-attempt ledger, batch bisection, timeouts.

The same rules against the real broker, object store and stage processes: tests/test_stage_runner.py
and tests/faults/."""

from __future__ import annotations

import asyncio
import json

from aiokafka import TopicPartition

from ocrstream.errors import NotAnImageError, TransientError

from .conftest import eventually
from .fakes import IN_TOPIC, OUT_TOPIC, BatchStage, ScriptedStage, record

TP0, TP1 = TopicPartition(IN_TOPIC, 0), TopicPartition(IN_TOPIC, 1)


def scripted(script=None):
    return lambda settings: ScriptedStage(settings, script)


async def test_batch_is_committed_past_its_last_record_per_partition_after_every_ack(harness):
    h = harness(scripted())
    await h.runner.deliver([record(3), record(4), record(7, partition=1)], asyncio.Event())
    assert h.producer.outputs() == ["doc-3", "doc-4", "doc-7"]
    assert h.consumer.commits == [{TP0: 5, TP1: 8}]
    assert h.log[-1][0] == "commit" and [e[0] for e in h.log[:-1]].count("ack") == 3
    assert h.stage.published_batches == [["doc-3", "doc-4", "doc-7"]]  # published before the commit
    assert not h.consumer.paused  # resumed after the batch


async def test_nothing_is_committed_while_an_output_is_not_acked(harness):
    h = harness(scripted())
    h.producer.hold = True
    delivery = asyncio.create_task(h.runner.deliver([record(0), record(1)], asyncio.Event()))
    while len([e for e in h.log if e[0] == "send"]) < 2:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.02)
    assert h.consumer.commits == [] and not delivery.done()
    h.producer.release()
    await asyncio.wait_for(delivery, 2)
    assert h.consumer.commits == [{TP0: 2}]


async def test_failed_produce_is_retried_and_committed_only_after_the_acks(harness):
    h = harness(scripted())
    h.producer.failures = [TransientError("broker unavailable")]
    await h.runner.deliver([record(0)], asyncio.Event())
    assert [e[0] for e in h.log] == ["send", "send", "ack", "commit"]
    assert h.consumer.commits == [{TP0: 1}]


async def test_transient_error_is_retried_until_the_record_succeeds(harness):
    h = harness(scripted({0: [TransientError("s3 slow"), TransientError("s3 slow")]}))
    await h.runner.deliver([record(0), record(1)], asyncio.Event())
    assert h.stage.calls == [0, 1, 0, 0]  # only the failing record is handled again
    assert h.producer.outputs() == ["doc-0", "doc-1"] and h.producer.dead_letters() == {}
    assert h.consumer.commits == [{TP0: 2}]


async def test_retries_are_capped_then_the_record_is_dead_lettered(harness):
    h = harness(scripted({0: [TransientError("db down")] * 10}), retry_max_attempts=3)
    await h.runner.deliver([record(0), record(1)], asyncio.Event())
    assert h.stage.calls.count(0) == 3
    assert h.producer.dead_letters() == {"doc-0": "RetriesExhaustedError"}
    assert h.producer.outputs() == ["doc-1"]
    assert h.consumer.commits == [{TP0: 2}]


async def test_stop_during_a_retry_backoff_commits_nothing(harness):
    h = harness(scripted({0: [TransientError("db down")] * 10}), retry_initial_s=30, retry_max_s=30)
    stop = asyncio.Event()
    delivery = asyncio.create_task(h.runner.deliver([record(0)], stop))
    await eventually(lambda: h.stage.calls)
    stop.set()
    await asyncio.wait_for(delivery, 2)
    assert h.consumer.commits == [] and h.producer.acked == []
    assert (TP0, 0) in h.consumer.seeks  # rewound: polled again by the next owner or run


async def test_permanent_error_becomes_a_typed_dead_letter_and_is_committed(harness):
    h = harness(scripted({1: [NotAnImageError("not an image")], 2: [KeyError("regions")]}))
    await h.runner.deliver([record(0), record(1), record(2)], asyncio.Event())
    assert h.stage.calls == [0, 1, 2]  # never retried
    assert h.producer.dead_letters() == {"doc-1": "NotAnImageError", "doc-2": "InternalError"}
    assert h.producer.outputs() == ["doc-0"]
    assert h.consumer.commits == [{TP0: 3}]
    dead = next(event for topic, key, event in h.producer.acked if key == "doc-1")
    assert dead["source"] == {"topic": IN_TOPIC, "partition": 0, "offset": 1} and dead["stage"] == "unit"


async def test_a_failing_dead_letter_input_is_committed_without_a_dead_letter(harness):
    h = harness(scripted({0: [NotAnImageError("cannot record it")]}))
    await h.runner.deliver([record(0, topic="ocr.dlq.v1")], asyncio.Event())
    assert h.producer.acked == []
    assert h.consumer.commits == [{TopicPartition("ocr.dlq.v1", 0): 1}]


async def test_an_unproducible_output_is_dead_lettered_instead(harness):
    h = harness(scripted(), max_message_bytes=5)  # every output is larger than 5 bytes
    await h.runner.deliver([record(0)], asyncio.Event())
    assert h.producer.dead_letters() == {"doc-0": "DocumentTooLargeError"} and h.producer.outputs() == []
    assert h.consumer.commits == [{TP0: 1}]


async def test_batch_failing_as_a_whole_is_split_until_the_bad_record_is_alone(harness):
    h = harness(lambda settings: BatchStage(settings, bad={2}))
    await h.runner.deliver([record(o) for o in range(4)], asyncio.Event())
    assert h.stage.batches == [[0, 1, 2, 3], [0, 1], [2, 3], [2], [3]]
    assert h.producer.dead_letters() == {"doc-2": "InternalError"}
    assert h.producer.outputs() == ["doc-0", "doc-1", "doc-3"]
    assert h.consumer.commits == [{TP0: 4}]


def ledger(h, partition: int = 0) -> dict:
    return json.loads(h.store.objects[h.ledger_key(partition)])


async def test_a_partition_is_marked_held_before_its_first_batch_and_later_batches_write_nothing(harness):
    h = harness(scripted({3: ["hang"]}), record_timeout_s=0.05)
    await h.runner.deliver([record(0), record(1)], asyncio.Event())
    held = {"unfinished": {}, "holder": h.runner.attempts.holder, "untracked": True, "batch_max": 16}
    assert ledger(h) == held and len(h.store.puts) == 1
    await h.runner.deliver([record(2)], asyncio.Event())
    assert len(h.store.puts) == 1 and h.consumer.commits[-1] == {TP0: 3}  # a clean batch: no write
    delivery = asyncio.create_task(h.runner.deliver([record(3), record(4)], asyncio.Event()))
    await eventually(lambda: 3 in h.stage.calls)
    assert ledger(h) == held  # still held while the batch is handled: a crash now is inherited
    await asyncio.wait_for(delivery, 2)  # timed out: 3 and 4 count one attempt each (in memory)
    await h.runner.deliver([record(3), record(4)], asyncio.Event())
    assert h.stage.calls[-1] == 3 and ledger(h)["unfinished"] == {"3": 2, "4": 1}  # written before handled
    assert ledger(h)["untracked"] is False


async def test_a_partition_held_by_a_process_that_died_is_handled_record_by_record(harness):
    h = harness(scripted())
    h.store.objects[h.ledger_key()] = json.dumps(
        {"unfinished": {}, "holder": "a-process-that-died", "untracked": True, "batch_max": 2}).encode()
    await h.runner.deliver([record(5), record(6), record(7)], asyncio.Event())
    assert h.stage.calls == [5] and (TP0, 6) in h.consumer.seeks  # 5 and 6 may have been in its batch
    assert ledger(h)["unfinished"] == {"5": 2, "6": 1}
    await h.runner.deliver([record(6), record(7)], asyncio.Event())
    assert h.stage.calls == [5, 6]
    await h.runner.deliver([record(7), record(8)], asyncio.Event())  # past the batch it may have had
    assert h.stage.calls == [5, 6, 7, 8] and ledger(h)["untracked"] is True
    assert h.consumer.commits[-1] == {TP0: 9}


async def test_released_partitions_are_not_inherited(harness):
    h = harness(scripted())
    await h.runner.deliver([record(0), record(1, partition=1)], asyncio.Event())
    await h.runner.settle({TP0})  # revoked after its batch committed
    assert ledger(h) == {"unfinished": {}, "holder": None, "untracked": False, "batch_max": 16}
    assert ledger(h, 1)["holder"] == h.runner.attempts.holder  # still held
    await h.runner.attempts.release(h.runner.attempts.held())  # stopping
    assert ledger(h, 1)["holder"] is None
    nxt = harness(scripted())
    nxt.store.objects = h.store.objects
    await nxt.runner.deliver([record(1), record(2)], asyncio.Event())
    assert nxt.stage.calls == [1, 2]  # one batch: nothing inherited


async def test_a_batch_abandoned_at_stop_counts_one_attempt_when_released(harness):
    h = harness(scripted({0: ["hang"]}), shutdown_grace_s=0.05)
    stop = asyncio.Event()
    delivery = asyncio.create_task(h.runner.deliver([record(0), record(1)], stop))
    await eventually(lambda: 0 in h.stage.calls)
    stop.set()
    await asyncio.wait_for(delivery, 2)
    assert h.consumer.commits == []
    await h.runner.attempts.release(h.runner.attempts.held())
    assert ledger(h) == {"unfinished": {"0": 1, "1": 1}, "holder": None, "untracked": False, "batch_max": 16}


async def test_record_begun_before_is_handled_alone_and_the_rest_polled_again(harness):
    h = harness(scripted())
    h.store.objects[h.ledger_key()] = json.dumps({"unfinished": {"5": 1, "6": 1}}).encode()
    await h.runner.deliver([record(5), record(6), record(7)], asyncio.Event())
    assert h.stage.calls == [5]
    assert (TP0, 6) in h.consumer.seeks
    assert h.consumer.commits == [{TP0: 6}]


async def test_poison_record_is_dead_lettered_without_being_handled(harness):
    h = harness(scripted(), max_delivery_attempts=3)
    h.store.objects[h.ledger_key()] = json.dumps({"unfinished": {"5": 3}}).encode()  # 3 crashes on it
    await h.runner.deliver([record(5), record(6)], asyncio.Event())
    assert h.stage.calls == []
    assert h.producer.dead_letters() == {"doc-5": "PoisonMessageError"}
    assert h.consumer.commits == [{TP0: 6}] and (TP0, 6) in h.consumer.seeks
    await h.runner.deliver([record(6)], asyncio.Event())  # the partition moves on
    assert h.stage.calls == [6] and h.consumer.commits[-1] == {TP0: 7}


async def test_record_timing_out_is_redelivered_then_dead_lettered_as_a_timeout(harness):
    h = harness(scripted({0: ["hang"] * 10}), record_timeout_s=0.05, max_delivery_attempts=2)
    for attempt in (1, 2):
        await h.runner.deliver([record(0)], asyncio.Event())
        assert h.stage.calls == [0] * attempt and h.consumer.commits == [] and h.producer.acked == []
        assert h.consumer.seeks[-1] == (TP0, 0)  # rewound
    await h.runner.deliver([record(0)], asyncio.Event())
    assert h.stage.calls == [0, 0]  # not handled a third time
    assert h.producer.dead_letters() == {"doc-0": "HandlerTimeoutError"}
    assert h.consumer.commits == [{TP0: 1}]


async def test_outputs_of_a_handled_record_go_to_the_stage_topic(harness):
    h = harness(scripted())
    await h.runner.deliver([record(9)], asyncio.Event())
    assert h.producer.acked == [(OUT_TOPIC, "doc-9", {"offset": 9})]


async def test_ignored_records_are_committed_without_being_handled_or_recorded(harness):
    class Ignoring(ScriptedStage):
        def ignores(self, r) -> bool:
            return r.offset % 2 == 1

    h = harness(lambda settings: Ignoring(settings))
    await h.runner.deliver([record(1), record(3, partition=1)], asyncio.Event())  # nothing to do at all
    assert h.stage.calls == [] and h.producer.outputs() == [] and h.store.objects == {}
    assert h.consumer.commits == [{TP0: 2, TP1: 4}]
    await h.runner.deliver([record(4), record(5), record(6)], asyncio.Event())
    assert h.stage.calls == [4, 6] and h.producer.outputs() == ["doc-4", "doc-6"]
    assert ledger(h)["holder"] == h.runner.attempts.holder and h.store.puts == [h.ledger_key()]
    assert h.consumer.commits[-1] == {TP0: 7}


async def test_a_handled_batch_goes_out_without_waiting_for_the_poll_in_flight(harness):
    """While a batch is handled the runner polls the paused consumer; once the batch is done, the
    poll in flight is cut short. Before, every hop waited for it (up to 200 ms per stage, issue 22);
    with a poll that never returns by itself, the delivery would never end."""
    h = harness(scripted())
    polls: list[int] = []

    async def endless_poll(*partitions, timeout_ms=0, max_records=None):
        polls.append(timeout_ms)
        await asyncio.Event().wait()

    h.consumer.getmany = endless_poll
    await asyncio.wait_for(h.runner.deliver([record(0)], asyncio.Event()), timeout=30)
    assert polls and h.producer.outputs() == ["doc-0"] and h.consumer.commits == [{TP0: 1}]


async def test_records_a_poll_returns_while_a_batch_is_handled_are_rewound(harness):
    h = harness(scripted())
    arrived = [{TP1: [record(5, partition=1)]}]

    async def poll(*partitions, timeout_ms=0, max_records=None):
        if arrived:
            return arrived.pop()
        await asyncio.Event().wait()

    h.consumer.assigned.add(TP1)
    h.consumer.getmany = poll
    await asyncio.wait_for(h.runner.deliver([record(0)], asyncio.Event()), timeout=30)
    assert not arrived and (TP1, 5) in h.consumer.seeks  # polled again after this batch
    assert h.consumer.commits == [{TP0: 1}]


async def test_a_release_the_object_store_does_not_answer_is_given_up_after_its_bound(harness):
    h = harness(scripted())
    await h.runner.deliver([record(0)], asyncio.Event())
    held = ledger(h)

    async def frozen_put(key, data, content_type="application/octet-stream"):
        await asyncio.sleep(3600)

    h.store.put = frozen_put
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(h.runner.settle({TP0}), 30)  # bounded by LEDGER_RELEASE_S, not the store
    assert asyncio.get_running_loop().time() - started < 10
    assert ledger(h) == held  # left held: its next owner handles its first records alone


class LingeringStage(ScriptedStage):
    """A stage that lingers 200 ms for more records (as recognize does, ``batch_max_wait_ms``)."""

    @property
    def linger_ms(self) -> int:
        return 200


def scripted_polls(h, answers: list[tuple[float, list]]) -> list[int]:
    """Make the consumer's polls answer, in turn, each ``(delay_s, records)``; returns the polls'
    ``timeout_ms``, one per call."""
    timeouts: list[int] = []

    async def poll(*partitions, timeout_ms=0, max_records=None):
        timeouts.append(timeout_ms)
        delay, records = answers.pop(0) if answers else (timeout_ms / 1000, [])
        await asyncio.sleep(delay)
        return {TP0: records} if records else {}

    h.consumer.getmany = poll
    return timeouts


async def test_records_ready_at_once_linger_for_more_to_batch_with(harness):
    """A backlog (the poll answers at once): the runner waits the linger for more and batches them."""
    h = harness(lambda settings: LingeringStage(settings))
    timeouts = scripted_polls(h, [(0, [record(0)]), (0.01, [record(1)])])
    got = await h.runner._poll()
    assert [r.offset for r in got] == [0, 1]
    assert timeouts[1] == 200  # the second poll is the linger


async def test_a_record_that_came_to_an_idle_stage_goes_on_without_the_linger(harness):
    """The poll waited longer than the linger for its record: the stage was idle, the record is alone,
    and lingering would only add its wait to the document's latency (issue 22)."""
    h = harness(lambda settings: LingeringStage(settings))
    timeouts = scripted_polls(h, [(0.25, [record(0)]), (0, [record(1)])])
    got = await h.runner._poll()
    assert [r.offset for r in got] == [0] and len(timeouts) == 1

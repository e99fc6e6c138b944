"""Kafka clients as every ocrstream process makes them: security, timeouts, producer, topics.

Security (production): ``OCRSTREAM_KAFKA_SECURITY_PROTOCOL`` = ``PLAINTEXT`` (default, the
embedded broker) | ``SSL`` | ``SASL_PLAINTEXT`` | ``SASL_SSL``; ``OCRSTREAM_KAFKA_SSL_CAFILE``
(CA bundle for the broker's certificate; the system store when unset), and for SASL
``OCRSTREAM_KAFKA_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``) with
``OCRSTREAM_KAFKA_SASL_USERNAME``/``_PASSWORD``. These map one to one onto aiokafka's options.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context

from ocrstream.contracts import events
from ocrstream.settings import Settings

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments shared by consumers, producers and admin clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=(settings.kafka_sasl_password.get_secret_value()
                                            if settings.kafka_sasl_password else None))
    return options


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer with ``acks=all``, idempotence as configured and the maximum message size.

    Idempotence (``OCRSTREAM_KAFKA_IDEMPOTENT_PRODUCER``, default on) makes the broker drop a
    batch the producer re-sends after a lost ack; the embedded broker (tansu) answers the
    producer-id request with an error, so ``ocrstream dev up`` turns it off there.
    """
    return AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5,
                            enable_idempotence=settings.kafka_idempotent_producer,
                            max_request_size=settings.max_message_bytes)


async def produce(producer: AIOKafkaProducer, outputs: Sequence[Any]) -> None:
    """Send every output (``.topic``, ``.key``, ``.payload``, ``.headers`` if any: the trace
    context) and wait until the broker acked all."""
    futures = [await (producer.send(o.topic, o.payload, key=o.key.encode(), headers=headers)
                      if (headers := getattr(o, "headers", None)) else
                      producer.send(o.topic, o.payload, key=o.key.encode()))
               for o in outputs]
    await asyncio.gather(*futures)


async def create_topics(client: str | Mapping[str, Any], names: Iterable[str], partitions: int = 1, *,
                        replication_factor: int = 1, timeout_ms: int = 10_000,
                        skip_existing: bool = False) -> list[str]:
    """Create topics with ``partitions`` partitions and ``replication_factor`` replicas; the new ones.

    Args:
        client: a bootstrap address ``"host:port"`` (plaintext, ``timeout_ms`` request timeout) or
            aiokafka client options (:func:`client_options`).
        names: topic names.
        skip_existing: list the topics first and only ask for the missing ones (no CREATE
            request, hence no CREATE permission needed, when all exist).

    A topic that already exists is left alone (error 36, TOPIC_ALREADY_EXISTS: another process
    created it first); aiokafka's admin client returns per-topic error codes instead of raising,
    so every other code is raised as the matching ``aiokafka.errors`` class (retriable ones such
    as NOT_CONTROLLER carry ``retriable=True``, see ``ocrstream.streaming.retry.is_transient``).
    tansu (the embedded broker) auto-creates unknown topics with 4 partitions on first produce
    or metadata request, so call this before anything touches a topic if its partition count
    matters. Raises the client's connection errors (transient).
    """
    options = ({"bootstrap_servers": client, "request_timeout_ms": timeout_ms} if isinstance(client, str)
               else dict(client))
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        existing = set(await admin.list_topics()) if skip_existing else set()
        topics = [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
                  for name in dict.fromkeys(names) if name not in existing]
        if not topics:
            return []
        response = await admin.create_topics(topics, timeout_ms=timeout_ms)
    finally:
        await admin.close()
    created = []
    for entry in response.topic_errors:  # (topic, error_code[, error_message])
        topic, code = entry[0], entry[1]
        if code == 0:
            created.append(topic)
        elif code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"create topic {topic!r}: {entry[2:] or ''}")
    return created


async def ensure_topics(settings: Settings, topics: Sequence[str] = events.ALL_TOPICS) -> None:
    """Create ``topics`` (``topic_partitions`` partitions, ``topic_replication_factor`` replicas)
    if they do not exist (:func:`create_topics`). Raises the client's connection errors
    (transient) and any broker error other than "already exists"."""
    await create_topics(client_options(settings), topics, settings.topic_partitions,
                        replication_factor=settings.topic_replication_factor,
                        timeout_ms=settings.kafka_request_timeout_ms, skip_existing=True)

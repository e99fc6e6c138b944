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
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from . import events
from .settings import Settings

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
    """Send every output (``.topic``, ``.key``, ``.payload``) and wait until the broker acked all."""
    futures = [await producer.send(o.topic, o.payload, key=o.key.encode()) for o in outputs]
    await asyncio.gather(*futures)


async def ensure_topics(settings: Settings, topics: Sequence[str] = events.ALL_TOPICS) -> None:
    """Create ``topics`` (``topic_partitions`` partitions, ``topic_replication_factor`` replicas)
    if they do not exist. Raises the client's connection errors (transient)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, settings.topic_partitions, settings.topic_replication_factor)
                   for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()

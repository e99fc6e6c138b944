"""Shared fixtures: one real embedded stack (tansu, SeaweedFS, PostgreSQL) per test session."""

from __future__ import annotations

import os

import pytest

from services.core.settings import Settings


def pytest_addoption(parser):
    """Options of the fault suite (tests/faults; registered here: only the root conftest's
    options are known when ``./test.sh`` collects every directory)."""
    group = parser.getgroup("faults", "fault suite (tests/faults)")
    group.addoption("--fault-docs", type=int, default=None, help="documents per fault scenario (default 30)")
    group.addoption("--soak", action="store_true", help="soak: 200 documents per scenario, longer outages")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """A running embedded stack; its :class:`StackEndpoints`."""
    from services.devstack import EmbeddedStack

    with EmbeddedStack(tmp_path_factory.mktemp("stack")) as running:
        yield running.start()


@pytest.fixture(scope="session")
def stack_env(stack) -> dict[str, str]:
    """Environment for stage processes talking to the test stack (short group timeouts)."""
    env = {**os.environ, **stack.as_env()}
    env.update({
        "OCRSTREAM_SESSION_TIMEOUT_MS": "6000",
        "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
        "OCRSTREAM_METRICS_PORT": "0",
        "OCRSTREAM_RETRY_INITIAL_S": "0.2",
        "OCRSTREAM_RETRY_MAX_S": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
        "OCRSTREAM_ORT_THREADS": "1",
    })
    return env


@pytest.fixture(scope="session")
def stack_settings(stack_env) -> Settings:
    return Settings.from_env(stack_env)

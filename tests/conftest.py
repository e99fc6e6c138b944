"""Shared fixtures: one real embedded stack (tansu, SeaweedFS, PostgreSQL) per test session."""

from __future__ import annotations

import os
import uuid

import pytest

from ocrstream.settings import Settings


def pytest_addoption(parser):
    """Options of the fault suite (tests/faults; registered here: only the root conftest's
    options are known when ``./test.sh`` collects every directory)."""
    group = parser.getgroup("faults", "fault suite (tests/faults)")
    group.addoption("--fault-docs", type=int, default=None, help="documents per fault scenario (default 30)")
    group.addoption("--soak", action="store_true", help="soak: 200 documents per scenario, longer outages")


# The tests pin the fp32 ONNX Runtime backend (stage processes they start inherit it): many assert
# exact invariances (batching, export parity, stages vs pipeline) that hold bit for bit in fp32.
# The default backend (auto: OpenVINO bf16 where the CPU has it) is tested against it in
# tests/unit/test_backends.py and measured by bench/bench_backends.py.
os.environ.setdefault("OCRSTREAM_INFERENCE", "onnxruntime")

#: The bound on one unit test, seconds (the rest: ``timeout`` in pyproject.toml's pytest options).
UNIT_TIMEOUT_S = 120

UNIT_DIR = os.path.join(os.path.dirname(__file__), "unit") + os.sep


def pytest_ignore_collect(collection_path, config):
    """With ``-m unit`` exactly, the other test modules are not even imported (collecting all of
    them imports torch, onnxruntime & co.: a minute on a busy machine); the markers below still
    decide for any other expression."""
    if config.getoption("markexpr", "").strip() == "unit" and collection_path.name.startswith("test_") \
            and collection_path.suffix == ".py" and not str(collection_path).startswith(UNIT_DIR):
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Every test is ``unit`` (tests/unit: no stack, no network), ``quality`` (lint, types, import
    contracts) or ``integration`` (the rest: real embedded stack, models, processes), so
    ``./test.sh -m unit`` runs the fast ones alone."""
    for item in items:
        if str(item.path).startswith(UNIT_DIR):
            item.add_marker("unit")
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
        elif item.get_closest_marker("quality") is None:
            item.add_marker("integration")


@pytest.fixture(scope="session", autouse=True)
def own_state_home(tmp_path_factory):
    """``ocrstream dev up`` records its settings file under ``$XDG_STATE_HOME`` (ocrstream/environment.py
    ``env_pointer_file``): the tests' own, never the user's."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    return os.environ["XDG_STATE_HOME"]


@pytest.fixture(scope="session")
def embedded_stack(tmp_path_factory):
    """The running :class:`EmbeddedStack` (for tests that pause/resume its servers)."""
    from ocrstream.devstack import EmbeddedStack

    with EmbeddedStack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def stack(embedded_stack):
    """A running embedded stack; its :class:`StackEndpoints`."""
    return embedded_stack.start()


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


@pytest.fixture(scope="module")
def pipeline(stack_env, tmp_path_factory):
    """The four stages as processes on the test stack, for one test module (stopped after it, so
    no stage of it consumes what later modules produce): ``(StageProcesses, env)``. Readiness
    probes and lag refreshes every second (tests/test_operability_e2e.py)."""
    from ocrstream.ops.launcher import STAGES, StageProcesses, free_port

    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"e2e-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_HEALTH_PROBE_INTERVAL_S": "1", "OCRSTREAM_HEALTH_PROBE_TIMEOUT_S": "1.5",
           "OCRSTREAM_LAG_REFRESH_S": "1"}
    metrics_ports = {stage: {"OCRSTREAM_METRICS_PORT": str(free_port())} for stage in STAGES}
    with StageProcesses(env, tmp_path_factory.mktemp("logs"), stage_env=metrics_ports) as stages:
        yield stages, env

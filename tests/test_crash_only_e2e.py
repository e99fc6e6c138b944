"""Crash-only, as a supervisor sees it: a stage process whose broker and object store never
answer exits with status 3 once ``OCRSTREAM_DEPENDENCY_EXIT_S`` has passed, instead of hanging
on endpoints that will never answer (e.g. after the local stack came back on other ports)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ocrstream.ops.launcher import free_port
from ocrstream.streaming.health import STRANDED_EXIT_STATUS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", ["preprocess", "api"])
def test_a_stage_whose_dependencies_never_answer_exits_with_status_3(stage, tmp_path):
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {**os.environ, "OCRSTREAM_ENV_FILE": str(tmp_path / "none.env"), "OCRSTREAM_KAFKA_BOOTSTRAP": nowhere,
           "OCRSTREAM_S3_ENDPOINT": nowhere, "OCRSTREAM_POSTGRES_DSN": f"postgresql://u:p@{nowhere}/db",
           "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_DEPENDENCY_EXIT_S": "3", "OCRSTREAM_HEALTH_PROBE_INTERVAL_S": "0.5",
           "OCRSTREAM_HEALTH_PROBE_TIMEOUT_S": "1"}
    run = subprocess.run([sys.executable, "-m", "ocrstream.cli", "run", stage], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == STRANDED_EXIT_STATUS, run.stderr[-3000:]
    assert "stranded" in run.stderr and "OCRSTREAM_DEPENDENCY_EXIT_S=3" in run.stderr

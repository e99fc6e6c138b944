"""``ocrstream status`` pieces that need no stack (the end-to-end checks are in test_pipeline_e2e.py)."""

from __future__ import annotations

from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.ops.status import Endpoint, StageStatus, _is_loopback, find_problems


def test_status_knows_each_stage_input_topics():
    from services.ingest.stage import IngestStage
    from services.preprocess.stage import PreprocessStage
    from services.recognize.stage import RecognizeStage
    from services.store.stage import StoreStage

    assert {cls.name: cls.input_topics for cls in (IngestStage, PreprocessStage, RecognizeStage, StoreStage)} \
        == STAGE_INPUTS


def test_problems_say_what_to_do():
    up = [Endpoint("Kafka API", "k", True), Endpoint("S3", "s", True), Endpoint("PostgreSQL", "p", True),
          Endpoint("ingest API", "http://i", False), Endpoint("query API", "-", None)]
    stopped = StageStatus("ingest", ["ocr.raw.v1"], "g-ingest", "Stable", 1, [], running=False, lag=3)
    problems = find_problems(up, [stopped])
    assert [p.what for p in problems] == ["ingest API at http://i does not answer",
                                          "stage ingest is not running (no process on this host); "
                                          "3 message(s) wait for it"]
    assert "ocrstream run ingest" in problems[1].do
    down = find_problems([Endpoint("Kafka API", "k", False)], [stopped])  # no broker: stages unknown
    assert len(down) == 1 and "ocrstream dev up" in down[0].do
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and not _is_loopback("kafka-0.internal")


def test_one_table_of_processes_feeds_every_reader():
    """contracts.stages is the one table: metrics, health, launcher and the CLI read it."""
    from ocrstream.cli.main import run
    from ocrstream.contracts.stages import PROCESSES, STAGES, metrics_port
    from ocrstream.ops import launcher
    from ocrstream.streaming import health, metrics

    assert launcher.STAGES == ("ingest", "preprocess", "recognize", "store")
    assert launcher.PROCESSES == (*launcher.STAGES, "api")
    assert metrics.STAGE_OUTPUTS == {name: s.outputs for name, s in STAGES.items()}
    assert health.NEEDS["api"] == ("postgres",) and set(health.NEEDS) == set(PROCESSES) | {"recognize-shadow"}
    assert health.NEEDS["recognize-shadow"] == ("kafka", "s3", "postgres") and metrics_port("recognize-shadow", None) == 9106
    assert list(run.params[0].type.choices) == list(PROCESSES)
    assert [metrics_port(n, None) for n in PROCESSES] == [9101, 9102, 9103, 9104, 9105]
    assert metrics_port("store", 0) == 0


def test_settings_are_grouped_described_and_print_no_secret(monkeypatch):
    from click.testing import CliRunner

    from ocrstream.cli.main import main
    from ocrstream.settings import GROUPS, Settings, describe, get_settings

    monkeypatch.setenv("OCRSTREAM_S3_SECRET_KEY", "hunter2-secret")
    get_settings.cache_clear()
    try:
        rows = describe(Settings())
        assert {r["group"] for r in rows} == set(GROUPS) and all(r["description"] for r in rows)
        assert len(rows) == len(Settings.model_fields)
        out = CliRunner().invoke(main, ["settings"])
        assert out.exit_code == 0, out.output
        assert "OCRSTREAM_S3_SECRET_KEY=**********" in out.output and "hunter2" not in out.output
        assert out.output.index("\nKafka\n") < out.output.index("\nObject store\n")
    finally:
        get_settings.cache_clear()

"""The pipeline's processes in one table: what each stage consumes and produces, its metrics port,
the event timestamp it sets and the dependencies its readiness probe checks.

Every reader of the topology takes it from here (the stage runtime's metrics, the health probes,
the lag exporter, ``ocrstream status``, the audit, the launcher, the CLI's ``run`` choices), so a
new stage or topic is one edit. Pure data: no stage is imported (readers outside the stages need
not load the stages' libraries); ``tests/test_deploy.py`` and the stage tests check that each
``Stage.input_topics`` equals its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ocrstream.contracts.events import DLQ, INGESTED, RAW, RECOGNIZED, REGIONS, RESULTS


@dataclass(frozen=True)
class StageSpec:
    """One process of the pipeline.

    Attributes:
        name: the process name (``ocrstream run <name>``; consumer group ``<prefix>-<name>``).
        inputs: topics its consumer group reads (empty for the query API). The ingest stage also
            reads the bucket-notifications topic when the bucket door is on
            (:func:`ocrstream.streaming.lag.stage_inputs`).
        outputs: topics it produces to.
        metrics_port: default TCP port of ``/metrics``, ``/healthz`` and ``/readyz``
            (``OCRSTREAM_METRICS_PORT`` overrides it; 0 turns it off).
        timestamp: the event timestamp it sets (``timestamps.<name>``), None for the query API.
        needs: what its readiness probe checks: ``kafka``, ``s3``, ``postgres`` (ingest also
            ``postgres`` when duplicates are reused, :mod:`ocrstream.streaming.health`).
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    metrics_port: int
    timestamp: str | None
    needs: tuple[str, ...]


#: The four stages, in pipeline order.
STAGES: Final[dict[str, StageSpec]] = {s.name: s for s in (
    StageSpec("ingest", (RAW,), (INGESTED, DLQ), 9101, "ingested", ("kafka", "s3")),
    StageSpec("preprocess", (INGESTED,), (REGIONS, DLQ), 9102, "preprocessed", ("kafka", "s3")),
    StageSpec("recognize", (REGIONS,), (RECOGNIZED, DLQ), 9103, "recognized", ("kafka", "s3")),
    StageSpec("store", (RECOGNIZED, DLQ), (RESULTS,), 9104, "stored", ("kafka", "postgres")),
)}

#: Every process: the stages and the query API (``ocrstream run api``, beside store).
PROCESSES: Final[dict[str, StageSpec]] = {**STAGES, "api": StageSpec("api", (), (), 9105, None, ("postgres",))}

#: Processes started only on purpose, never by the launcher: a candidate model reading live
#: regions beside recognize (``ocrstream run recognize --shadow SHA``, services/recognize/shadow.py;
#: consumer group ``<prefix>-recognize-shadow-<sha256[:12]>``, readings to PostgreSQL only).
OPTIONAL_PROCESSES: Final[dict[str, StageSpec]] = {
    "recognize-shadow": StageSpec("recognize-shadow", (REGIONS,), (), 9106, None, ("kafka", "s3", "postgres")),
}

#: Input topics of each stage's consumer group (the lag exporter, status and audit read these).
STAGE_INPUTS: Final[dict[str, tuple[str, ...]]] = {name: s.inputs for name, s in STAGES.items()}


def metrics_port(name: str, configured: int | None) -> int:
    """The metrics/probe port of process ``name`` (of :data:`PROCESSES` or :data:`OPTIONAL_PROCESSES`):
    ``configured`` (``OCRSTREAM_METRICS_PORT``; 0 = off) or the process's default. Raises KeyError
    for an unknown process."""
    spec = PROCESSES[name] if name in PROCESSES else OPTIONAL_PROCESSES[name]
    return spec.metrics_port if configured is None else configured

"""Every ingest door's series exist from the start (issue 23: ``bucket`` was missing)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import REGISTRY

from ocrstream.contracts.event_models import SourceKind
from ocrstream.streaming import metrics


def test_doors_are_every_source_of_the_contract():
    assert set(metrics.DOORS) == set(get_args(SourceKind)) and "bucket" in metrics.DOORS


def test_ingest_and_store_series_are_preinitialised_for_every_door():
    metrics.init_stage("ingest", ["ocr.raw"])
    metrics.init_stage("store", ["ocr.recognized.v1"])
    for door in get_args(SourceKind):
        assert REGISTRY.get_sample_value("ocrstream_ingest_documents_total", {"door": door}) is not None, door
        assert REGISTRY.get_sample_value("ocrstream_end_to_end_seconds_count",
                                         {"status": "done", "door": door}) is not None, door

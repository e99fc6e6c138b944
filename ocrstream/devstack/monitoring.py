"""Local monitoring files for the embedded stack, written by ``ocrstream dev up`` into
``STATE_DIR/monitoring/``:

* ``prometheus.yml``: job ``ocrstream`` scrapes every process of the pipeline on this host at its
  default metrics port (:data:`ocrstream.contracts.stages.PROCESSES`: ingest 9101, preprocess 9102,
  recognize 9103, store 9104, api 9105), each target labelled ``service=<name>`` as the compose
  file's DNS discovery labels them (so the dashboard's queries work unchanged); job
  ``ocrstream-lag`` scrapes ``ocrstream lag-exporter`` (9108). The checkout's alert rules
  (``deploy/prometheus/alerts.yml``) are loaded when present (an installed package has none).
  Checked by ``promtool check config`` in the tests.
* ``grafana/provisioning/``: a Prometheus datasource (``uid: prometheus``, http://127.0.0.1:9090, the
  uid the dashboard names) and a file dashboard provider reading ``grafana/dashboards/`` (the
  checkout's ``deploy/grafana/dashboards/ocrstream.json`` copied there), for a Grafana started with
  ``GF_PATHS_PROVISIONING`` pointing at it; no compose, no Docker.

The compose and Kubernetes versions (DNS names, alertmanager) are in ``deploy/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from ocrstream.contracts.stages import PROCESSES

__all__ = ["LAG_EXPORTER_PORT", "PROMETHEUS_PORT", "monitoring_targets", "write_monitoring"]

#: Default ports of ``ocrstream lag-exporter`` and of a local Prometheus.
LAG_EXPORTER_PORT = 9108
PROMETHEUS_PORT = 9090
#: The checkout's deploy/ folder (absent from an installed package).
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def monitoring_targets() -> dict[str, str]:
    """``{service: "127.0.0.1:PORT"}`` of every pipeline process at its default metrics port."""
    return {name: f"127.0.0.1:{spec.metrics_port}" for name, spec in PROCESSES.items()}


def prometheus_config(alerts: Path | None) -> dict[str, Any]:
    """The Prometheus configuration (as a dict) for this host's processes; ``alerts``: a rules file."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {"job_name": "ocrstream",
             "static_configs": [{"targets": [target], "labels": {"service": name}}
                                for name, target in monitoring_targets().items()]},
            {"job_name": "ocrstream-lag", "static_configs": [{"targets": [f"127.0.0.1:{LAG_EXPORTER_PORT}"]}]},
        ],
    }
    if alerts is not None:
        config["rule_files"] = [str(alerts)]
    return config


def write_monitoring(state_dir: Path, deploy: Path = DEPLOY) -> Path:
    """Write ``STATE_DIR/monitoring/`` (above) and return that folder. ``deploy``: where the alert
    rules and the dashboard are taken from, when present. Overwrites earlier files; raises OSError
    when the folder cannot be written."""
    root = Path(state_dir).absolute() / "monitoring"
    alerts = deploy / "prometheus" / "alerts.yml"
    _write_yaml(root / "prometheus.yml", prometheus_config(alerts if alerts.is_file() else None))
    grafana = root / "grafana"
    dashboards = grafana / "dashboards"
    dashboards.mkdir(parents=True, exist_ok=True)
    for dashboard in sorted((deploy / "grafana" / "dashboards").glob("*.json")):
        shutil.copyfile(dashboard, dashboards / dashboard.name)
    _write_yaml(grafana / "provisioning" / "datasources" / "prometheus.yml", {
        "apiVersion": 1,
        "datasources": [{"name": "Prometheus", "uid": "prometheus", "type": "prometheus",
                         "url": f"http://127.0.0.1:{PROMETHEUS_PORT}", "isDefault": True}]})
    _write_yaml(grafana / "provisioning" / "dashboards" / "ocrstream.yml", {
        "apiVersion": 1,
        "providers": [{"name": "ocrstream", "type": "file", "options": {"path": str(dashboards)}}]})
    for unused in ("plugins", "alerting"):  # Grafana warns about provisioning folders it cannot read
        (grafana / "provisioning" / unused).mkdir(parents=True, exist_ok=True)
    return root


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `ocrstream dev up` (ocrstream/devstack/monitoring.py)\n"
                    + yaml.safe_dump(data, sort_keys=False))

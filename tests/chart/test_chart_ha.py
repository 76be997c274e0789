"""A highly available operator: replicas that elect a leader on one Lease, probes every replica answers,
a PodDisruptionBudget, and spreading over nodes. (The take-over itself: tests/e2e/test_operator_ha.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from chart_tools import by_kind, one, render, template

from kubetune_operator.settings import OperatorSettings

SERVE_ALL = {"clusterWide": "true"}


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_two_replicas_elect_a_leader_on_a_lease_only_they_may_update() -> None:
    docs = render(values=SERVE_ALL)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = env_of(deployment)
    settings = OperatorSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert (settings.leader_election, settings.lease_namespace, settings.lease_name) == (
        True,
        "kubetune-system",
        "kt-kubetune",
    )
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == "kubetune-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kt-kubetune"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["subjects"][0]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]


def test_every_replica_is_probed_and_the_replicas_spread_and_survive_a_drain() -> None:
    docs = render(values=SERVE_ALL)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == pod_labels(docs)


def pod_labels(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_one_replica_without_an_election_is_recreated_never_doubled() -> None:
    docs = render(values={**SERVE_ALL, "replicaCount": "1", "leaderElection.enabled": "false"})
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env_of(deployment)["KUBETUNE_LEADER_ELECTION"] == "false"
    assert by_kind(docs, "PodDisruptionBudget") == []  # one replica: a budget would block every drain
    assert not [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def test_several_replicas_without_an_election_are_refused() -> None:
    with pytest.raises(AssertionError) as refused:
        template(values={**SERVE_ALL, "replicaCount": "2", "leaderElection.enabled": "false"})
    assert "replicaCount > 1 needs leaderElection.enabled" in str(refused.value)

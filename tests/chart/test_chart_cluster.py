"""The chart against the local cluster's API server: server-side dry runs, and the RBAC it grants.

Every object lives in namespaces named chart-<random>, deleted at the end; the cluster-scoped RBAC
objects carry the release namespace in their names and go with `helm uninstall`. The CRD is shared
with the other suites and never deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from chart_tools import CHART, CRD_NAMES, helm, kubectl, template

pytestmark = pytest.mark.cluster

# A node label no node has: the operator pod stays Pending, so installing the chart to inspect its
# RBAC never starts a second operator next to whatever else runs on the shared cluster.
NEVER_SCHEDULED = ("--set-string", "nodeSelector.kubetune\\.dev/never-scheduled=true")


@dataclass(frozen=True)
class Scratch:
    release_ns: str
    watched: str
    other: str


@pytest.fixture
def scratch(cluster_env: dict[str, str]) -> Iterator[Scratch]:
    base = f"chart-{uuid.uuid4().hex[:8]}"
    s = Scratch(release_ns=base, watched=f"{base}-a", other=f"{base}-b")
    names = [s.release_ns, s.watched, s.other]
    for ns in names:
        kubectl("create", "namespace", ns, cluster_env=cluster_env)
    yield s
    kubectl("delete", "namespace", *names, "--wait=false", "--ignore-not-found", cluster_env=cluster_env)


def test_server_dry_run(cluster_env: dict[str, str], scratch: Scratch) -> None:
    # The CRDs first: helm installs crds/ before any template.
    for name in CRD_NAMES:
        kubectl("apply", "--dry-run=server", "-f", str(CHART / "crds" / name), cluster_env=cluster_env)
    # Both scopes, with the admission policy: a dry run stores nothing, so the policy binds nothing.
    for values in ({"clusterWide": "true"}, {"watchNamespaces": f"{{{scratch.watched},{scratch.other}}}"}):
        manifests = template(
            namespace=scratch.release_ns, values=values | {"admissionPolicy.enabled": "true"}
        )
        out = kubectl("apply", "--dry-run=server", "-f", "-", input=manifests, cluster_env=cluster_env)
        assert "deployment.apps/" in out.stdout, out.stdout
        assert "validatingadmissionpolicybinding.admissionregistration.k8s.io/" in out.stdout, out.stdout


class Installed:
    """A helm release of the chart whose service account is asked what it may do."""

    def __init__(self, cluster_env: dict[str, str], namespace: str, release: str = "kt") -> None:
        self.env = cluster_env
        self.namespace = namespace
        self.release = release
        self.user = f"system:serviceaccount:{namespace}:{release}-kubetune"

    def install(self, *args: str) -> None:
        helm(
            "install",
            self.release,
            str(CHART),
            "-n",
            self.namespace,
            *NEVER_SCHEDULED,
            *args,
            cluster_env=self.env,
        )

    def uninstall(self) -> None:
        helm("uninstall", self.release, "-n", self.namespace, "--wait", cluster_env=self.env)

    def can(self, *question: str) -> bool:
        result = kubectl("auth", "can-i", *question, "--as", self.user, check=False, cluster_env=self.env)
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"

    def may_grant(self, namespace: str, *rule: str) -> bool:
        """Whether RBAC's escalation check lets it create a Role with this rule (dry run)."""
        result = kubectl(
            *("-n", namespace, "create", "role", "probe", *rule),
            *("--dry-run=server", "--as", self.user),
            check=False,
            cluster_env=self.env,
        )
        assert result.returncode == 0 or "forbidden" in result.stderr, result.stderr
        return result.returncode == 0


# What the operator does for each FineTuneJob: the trainer's Role on its own FineTuneJob's status.
TRAINER_ROLE = ("--verb=get,patch", "--resource=finetunejobs.kubetune.dev/status", "--resource-name=ftj")


def test_cluster_wide_rbac(cluster_env: dict[str, str], scratch: Scratch) -> None:
    sa = Installed(cluster_env, scratch.release_ns)
    sa.install("--set", "clusterWide=true")
    try:
        for ns in (scratch.watched, scratch.other):
            assert sa.can("create", "jobs.batch", "-n", ns)
            assert sa.can("patch", "finetunejobs.kubetune.dev", "--subresource=status", "-n", ns)
            assert sa.may_grant(ns, *TRAINER_ROLE)
            assert not sa.can("get", "secrets", "-n", ns)
            assert not sa.may_grant(ns, "--verb=get", "--resource=secrets")
        for resource in ("finetunejobs.kubetune.dev", "jobs.batch", "pods"):
            assert sa.can("list", resource, "--all-namespaces")
            assert sa.can("watch", resource, "--all-namespaces")
        assert sa.can("watch", "customresourcedefinitions.apiextensions.k8s.io")
        assert not sa.can("get", "secrets", "--all-namespaces")
        assert not sa.can("list", "secrets", "--all-namespaces")
        assert not sa.can("delete", "namespaces")
        assert not sa.can("create", "clusterroles.rbac.authorization.k8s.io")
        assert not sa.can("update", "deployments.apps", "-n", scratch.release_ns)
    finally:
        sa.uninstall()


def test_namespaced_rbac(cluster_env: dict[str, str], scratch: Scratch) -> None:
    sa = Installed(cluster_env, scratch.release_ns)
    sa.install("--set", f"watchNamespaces={{{scratch.watched}}}")
    try:
        assert sa.can("create", "jobs.batch", "-n", scratch.watched)
        assert sa.can("patch", "finetunejobs.kubetune.dev", "--subresource=status", "-n", scratch.watched)
        assert sa.may_grant(scratch.watched, *TRAINER_ROLE)
        assert not sa.can("get", "secrets", "-n", scratch.watched)
        # Nothing in a namespace it does not watch, and no cluster-wide access to workloads.
        assert not sa.can("create", "jobs.batch", "-n", scratch.other)
        assert not sa.may_grant(scratch.other, *TRAINER_ROLE)
        assert not sa.can("list", "finetunejobs.kubetune.dev", "--all-namespaces")
        assert not sa.can("list", "pods", "--all-namespaces")
        # Kopf's read-only discovery.
        assert sa.can("list", "namespaces")
        assert not sa.can("delete", "namespaces")
    finally:
        sa.uninstall()


def test_an_install_without_a_scope_is_refused(cluster_env: dict[str, str], scratch: Scratch) -> None:
    # Namespaced is the default, so an install must name its namespaces or opt into cluster-wide.
    result = helm(
        *("install", "kt", str(CHART), "-n", scratch.release_ns, *NEVER_SCHEDULED),
        check=False,
        cluster_env=cluster_env,
    )
    assert result.returncode != 0
    assert "set watchNamespaces" in result.stderr and "clusterWide=true" in result.stderr, result.stderr
    assert "kt" not in helm("list", "-q", "-n", scratch.release_ns, cluster_env=cluster_env).stdout.split()

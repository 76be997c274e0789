"""The operator's replicas as the e2e tests see them: its pods, and which one leads (holds the Lease)."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devcluster import release

OPERATOR_NAMESPACE = release.NAMESPACE
# The chart's full name for the release, which names the Lease too.
LEASE = release.RELEASE


def operator_pods(core: client.CoreV1Api) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(
        OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/name=kubetune"
    ).items
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def leader_pod(core: client.CoreV1Api) -> str | None:
    """The running replica that holds the operator's Lease, if any."""
    try:
        lease = client.CoordinationV1Api(core.api_client).read_namespaced_lease(LEASE, OPERATOR_NAMESPACE)
    except ApiException as e:
        if e.status == 404:
            return None  # no replica has led yet
        raise
    holder = lease.spec.holder_identity if lease.spec else None
    return holder if holder in {p.metadata.name for p in operator_pods(core)} else None

"""Kueue objects for the end-to-end tests: a ClusterQueue of the test's own (so its quota is exact and
no other test shares it) over the kit's ResourceFlavors, a LocalQueue in the test's namespace, and two
WorkloadPriorityClasses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from devcluster import addons

GROUP, VERSION = addons.KUEUE_GROUP, addons.KUEUE_VERSION
LOW, HIGH = "kubetune-e2e-low", "kubetune-e2e-high"


def _create(call: Any) -> None:
    try:
        call()
    except ApiException as e:
        if e.status != 409:
            raise


def ensure_priority_classes(custom: client.CustomObjectsApi) -> None:
    for name, value in ((LOW, 100), (HIGH, 1000)):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "WorkloadPriorityClass",
            "metadata": {"name": name},
            "value": value,
        }
        _create(
            lambda body=body: custom.create_cluster_custom_object(
                GROUP, VERSION, "workloadpriorityclasses", body
            )
        )


@contextmanager
def queue(custom: client.CustomObjectsApi, namespace: str, gpus: int) -> Iterator[str]:
    """A LocalQueue in `namespace` whose ClusterQueue admits `gpus` GPUs at a time and preempts lower
    priorities; yields the LocalQueue's name."""
    cluster_queue = f"e2e-{uuid.uuid4().hex[:6]}"

    def flavor(name: str, gpu: int | None = None) -> dict[str, Any]:
        """The kit's quota of that flavor (tests/devcluster: every resource our pods ask for), with
        its own number of GPUs."""
        quota = {**addons.FLAVOR_QUOTAS[name], **({addons.GPU_RESOURCE: str(gpu)} if gpu is not None else {})}
        return {"name": name, "resources": [{"name": r, "nominalQuota": q} for r, q in quota.items()]}

    custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "clusterqueues",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterQueue",
            "metadata": {"name": cluster_queue},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        "coveredResources": list(addons.FLAVOR_QUOTAS[addons.CPU_FLAVOR]),
                        "flavors": [flavor(addons.CPU_FLAVOR), flavor(addons.GPU_FLAVOR, gpus)],
                    }
                ],
                "preemption": {"withinClusterQueue": "LowerPriority"},
            },
        },
    )
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": "gpus"},
            "spec": {"clusterQueue": cluster_queue},
        },
    )
    try:
        yield "gpus"
    finally:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "localqueues", "gpus")
        custom.delete_cluster_custom_object(GROUP, VERSION, "clusterqueues", cluster_queue)


def workloads(custom: client.CustomObjectsApi, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "workloads"
    )["items"]
    return items


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})

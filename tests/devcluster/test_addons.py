"""Kueue and JobSet in the local cluster: queued Jobs and JobSets are admitted against the kit's
ClusterQueue, run and finish; what exceeds its quota waits; what carries no queue label is left alone.

These tests need the cluster running and fail (never skip) when it is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from devcluster import addons
from support import wait_for

pytestmark = pytest.mark.cluster

GROUP, VERSION = addons.KUEUE_GROUP, addons.KUEUE_VERSION
JOBSET_GROUP, JOBSET_VERSION = addons.JOBSET_API.split("/")


@pytest.fixture(scope="module")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def queue(custom: client.CustomObjectsApi, namespace: str) -> Iterator[str]:
    """LocalQueue `kubetune` in the test's namespace, Active."""
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "localqueues", addons.local_queue(namespace)
    )

    def active() -> bool:
        lq = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "localqueues", addons.LOCAL_QUEUE)
        return _condition(lq, "Active") is not None

    wait_for(active, 30, "LocalQueue Active")
    yield addons.LOCAL_QUEUE


def _condition(obj: dict[str, Any], type_: str, status: str = "True") -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c["type"] == type_ and c["status"] == status:
            return dict(c)
    return None


def _pod_spec(gpus: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["sleep", "2"]}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if gpus:
        container["resources"] = {
            "requests": {addons.GPU_RESOURCE: str(gpus)},
            "limits": {addons.GPU_RESOURCE: str(gpus)},
        }
        spec["tolerations"] = [addons.GPU_TOLERATION]
    return spec


def _job(name: str, queue: str | None, gpus: int = 0) -> dict[str, Any]:
    labels = {addons.QUEUE_NAME_LABEL: queue} if queue else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {"suspend": bool(queue), "backoffLimit": 0, "template": {"spec": _pod_spec(gpus)}},
    }


def _workloads(custom: client.CustomObjectsApi, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "workloads")["items"]
    return [w for w in items if any(o["uid"] == owner_uid for o in w["metadata"].get("ownerReferences", []))]


def _workload(custom: client.CustomObjectsApi, namespace: str, owner_uid: str) -> dict[str, Any] | None:
    found = _workloads(custom, namespace, owner_uid)
    return found[0] if found else None


def _job_finished(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    job = batch.read_namespaced_job_status(name, namespace)
    done = [
        c.type for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"
    ]
    return done[0] if done else None


def test_queued_gpu_job_is_admitted_runs_and_finishes(
    batch: client.BatchV1Api, custom: client.CustomObjectsApi, namespace: str, queue: str
) -> None:
    job = batch.create_namespaced_job(namespace, _job("gpu", queue, gpus=1))
    admitted = wait_for(
        lambda: (w := _workload(custom, namespace, job.metadata.uid)) and _condition(w, "Admitted") and w,
        60,
        "the Job's Workload to be admitted",
    )
    assert admitted["spec"]["queueName"] == queue
    assignment = admitted["status"]["admission"]
    assert assignment["clusterQueue"] == addons.CLUSTER_QUEUE
    # No GPU quota in `cpu`, so the GPU request falls through to `gpu`.
    assert assignment["podSetAssignments"][0]["flavors"][addons.GPU_RESOURCE] == addons.GPU_FLAVOR
    wait_for(
        lambda: batch.read_namespaced_job(job.metadata.name, namespace).spec.suspend is False,
        30,
        "unsuspended",
    )
    assert wait_for(lambda: _job_finished(batch, namespace, "gpu"), 90, "the Job to finish") == "Complete"
    wait_for(
        lambda: _condition(
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "workloads", admitted["metadata"]["name"]
            ),
            "Finished",
        ),
        30,
        "the Workload to be Finished",
    )


def test_job_over_quota_stays_suspended(
    batch: client.BatchV1Api, custom: client.CustomObjectsApi, namespace: str, queue: str
) -> None:
    quota = int(addons.FLAVOR_QUOTAS[addons.GPU_FLAVOR][addons.GPU_RESOURCE])
    job = batch.create_namespaced_job(namespace, _job("too-big", queue, gpus=quota + 4))

    def refused() -> dict[str, Any] | None:
        w = _workload(custom, namespace, job.metadata.uid)
        return _condition(w, "QuotaReserved", "False") if w else None

    condition = wait_for(refused, 60, "the Workload to be refused quota")
    assert "insufficient" in condition["message"] or "exceeds" in condition["message"], condition
    assert batch.read_namespaced_job(job.metadata.name, namespace).spec.suspend is True
    assert not batch.read_namespaced_job_status(job.metadata.name, namespace).status.active


def test_queued_jobset_is_one_workload_and_completes(
    custom: client.CustomObjectsApi, namespace: str, queue: str
) -> None:
    jobset = custom.create_namespaced_custom_object(
        JOBSET_GROUP,
        JOBSET_VERSION,
        namespace,
        "jobsets",
        {
            "apiVersion": addons.JOBSET_API,
            "kind": "JobSet",
            "metadata": {"name": "pair", "labels": {addons.QUEUE_NAME_LABEL: queue}},
            "spec": {
                "replicatedJobs": [
                    {
                        "name": "workers",
                        "replicas": 1,
                        "template": {
                            "spec": {
                                "parallelism": 2,
                                "completions": 2,
                                "backoffLimit": 0,
                                "template": {"spec": _pod_spec()},
                            }
                        },
                    }
                ]
            },
        },
    )
    uid = jobset["metadata"]["uid"]
    # Kueue's webhook suspends it until admission.
    assert jobset["spec"]["suspend"] is True
    admitted = wait_for(
        lambda: (w := _workload(custom, namespace, uid)) and _condition(w, "Admitted") and w,
        60,
        "the JobSet's Workload to be admitted",
    )
    assert [ps["count"] for ps in admitted["spec"]["podSets"]] == [2]

    def completed() -> dict[str, Any] | None:
        js = custom.get_namespaced_custom_object(JOBSET_GROUP, JOBSET_VERSION, namespace, "jobsets", "pair")
        assert _condition(js, "Failed") is None, js["status"]
        return _condition(js, "Completed")

    wait_for(completed, 120, "the JobSet to complete")
    # One Workload for the JobSet; its child Job is JobSet's to run, not a second Kueue workload.
    workloads = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "workloads")["items"]
    assert [w["metadata"]["uid"] for w in workloads] == [admitted["metadata"]["uid"]]


def test_job_without_queue_label_is_left_alone(
    batch: client.BatchV1Api, custom: client.CustomObjectsApi, namespace: str, queue: str
) -> None:
    job = batch.create_namespaced_job(namespace, _job("plain", None))
    assert not job.spec.suspend
    assert wait_for(lambda: _job_finished(batch, namespace, "plain"), 90, "the Job to finish") == "Complete"
    assert custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "workloads")["items"] == []


def test_webhooks_are_called_by_url_for_the_enabled_integrations(api_client: client.ApiClient) -> None:
    admission = client.AdmissionregistrationV1Api(api_client)
    configs = [
        *admission.list_mutating_webhook_configuration().items,
        *admission.list_validating_webhook_configuration().items,
    ]
    ours = [c for c in configs if c.metadata.name.startswith(("kueue-", "jobset-"))]
    assert len(ours) == 4, [c.metadata.name for c in configs]
    for config in ours:
        for hook in config.webhooks:
            assert hook.client_config.service is None
            assert hook.client_config.url.startswith("https://127.0.0.1:"), hook.client_config.url
            assert hook.client_config.ca_bundle
            groups = {g for rule in hook.rules for g in rule.api_groups}
            if config.metadata.name.startswith("kueue-"):
                assert groups <= addons.KUEUE_WEBHOOK_GROUPS, (hook.name, groups)
            elif groups == {""}:  # JobSet's pod webhooks only see JobSet pods
                assert hook.object_selector.match_expressions[0].key == "jobset.sigs.k8s.io/jobset-name"

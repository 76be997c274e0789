"""Pods that cannot run say why, within 30 s, in the status and as a Warning Event, in the words of
whoever refused them: the scheduler, a ResourceQuota, the kubelet. And the run's limits: the deadline
bounds the whole run, and an edit of backoffLimit reaches the running Job."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from e2e_support import apply_ftj, events_for, get_ftj, tiny_job, wait_phase
from support import wait_for

pytestmark = pytest.mark.cluster


def _pods_ready(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, str]:
    status = get_ftj(custom, namespace, name).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "PodsReady"), {})


def _says_within_30s(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    reason: str,
    words: str,
) -> None:
    start = time.monotonic()
    condition = wait_for(
        lambda: c if (c := _pods_ready(custom, namespace, name)).get("reason") == reason else None,
        30,
        f"{name}: PodsReady False with reason {reason}",
        interval=0.5,
    )
    print(f"{name}: {reason} in the status after {time.monotonic() - start:.1f} s")
    assert condition["status"] == "False" and words in condition["message"], condition
    assert get_ftj(custom, namespace, name)["status"]["phase"] == "Pending"
    warning = wait_for(
        lambda: next(
            (e for e in events_for(core, namespace, name) if e.type == "Warning" and e.reason == reason), None
        ),
        10,
        f"a Warning Event {reason} on {name}",
    )
    assert words in warning.message


def test_unschedulable_quota_and_missing_secret_each_say_why(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    core.create_namespaced_resource_quota(
        workspace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="no-gpus"),
            spec=client.V1ResourceQuotaSpec(hard={"requests.nvidia.com/gpu": "0"}),
        ),
    )
    # No node has 9 GPUs; the quota allows none; the Secret does not exist.
    too_big = tiny_job("too-big", s3_seeded, resources={"gpusPerNode": 9, "cpu": 1, "memory": "2Gi"})
    over_quota = tiny_job("over-quota", s3_seeded, resources={"gpusPerNode": 1, "cpu": 1, "memory": "2Gi"})
    no_secret = tiny_job("no-secret", s3_seeded)
    no_secret["spec"]["output"]["credentialsSecretRef"] = {"name": "missing-creds"}
    # too-big runs in a namespace without the quota, or the quota would refuse it first.
    for body in (over_quota, no_secret):
        apply_ftj(custom, workspace, body)

    _says_within_30s(custom, core, workspace, "over-quota", "FailedCreate", "exceeded quota")
    _says_within_30s(custom, core, workspace, "no-secret", "CreateContainerConfigError", "missing-creds")

    core.delete_namespaced_resource_quota("no-gpus", workspace)
    apply_ftj(custom, workspace, too_big)
    _says_within_30s(custom, core, workspace, "too-big", "Unschedulable", "Insufficient nvidia.com/gpu")


def test_the_deadline_bounds_the_run_and_backoff_limit_edits_reach_the_job(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
) -> None:
    long_training = {**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 100000, "saveSteps": 100000}
    apply_ftj(
        custom, workspace, tiny_job("endless", s3_seeded, training=long_training, activeDeadlineSeconds=60)
    )
    apply_ftj(custom, workspace, tiny_job("edited", s3_seeded, training=long_training, backoffLimit=2))

    wait_phase(custom, workspace, "edited", {"Training"}, 120)
    custom.patch_namespaced_custom_object(
        "kubetune.dev", "v1alpha1", workspace, "finetunejobs", "edited", {"spec": {"backoffLimit": 5}}
    )
    wait_for(
        lambda: batch.read_namespaced_job("edited-train", workspace).spec.backoff_limit == 5,
        30,
        "the backoffLimit edit to reach the running Job",
    )
    edited = get_ftj(custom, workspace, "edited")
    assert edited["status"]["phase"] == "Training"  # the same run goes on
    custom.delete_namespaced_custom_object("kubetune.dev", "v1alpha1", workspace, "finetunejobs", "edited")

    failed = wait_phase(custom, workspace, "endless", {"Succeeded", "Failed"}, 180)["status"]
    assert failed["phase"] == "Failed", failed
    assert "deadline" in failed["message"].lower(), failed["message"]
    started = failed["startTime"]
    assert started and failed["completionTime"]

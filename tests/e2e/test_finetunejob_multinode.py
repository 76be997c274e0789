"""Multi-node training on the local cluster as a JobSet, run by the real JobSet controller and admitted
by the real Kueue as one workload: two trainer pods on the two GPU nodes meet at pod 0 through the
JobSet's headless Service and end with identical weights. When one pod is lost without a SIGTERM
(SIGKILL), the whole group restarts and resumes from the last checkpoint; no survivor hangs."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kueue_support import workloads

from devcluster import addons
from e2e_support import apply_ftj, get_ftj, tiny_job, wait_phase
from kubetune_operator.services.children import api_served
from support import wait_for

pytestmark = pytest.mark.cluster

JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")


def _jobset(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], name)
    return obj


def test_two_pods_with_two_processes_each_train_one_model_as_one_admitted_gang(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    body = tiny_job(
        "pair",
        s3_seeded,
        resources={"gpusPerNode": 2, "nodes": 2, "cpu": 1, "memory": "6Gi"},
        training={**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 8},
        queueName=addons.LOCAL_QUEUE,
    )
    apply_ftj(custom, workspace, body)
    status = wait_phase(custom, workspace, "pair", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status

    # Kueue admitted the JobSet as one workload holding both pods.
    (workload,) = [
        w for w in workloads(custom, workspace) if w["metadata"]["ownerReferences"][0]["kind"] == "JobSet"
    ]
    assert sum(p["count"] for p in workload["spec"]["podSets"]) == 2
    pods = core.list_namespaced_pod(
        workspace, label_selector="jobset.sigs.k8s.io/jobset-name=pair-train"
    ).items
    by_index = {int(p.metadata.labels["batch.kubernetes.io/job-completion-index"]): p for p in pods}
    assert sorted(by_index) == [0, 1]
    assert {p.spec.node_name for p in pods} == {"gpu-node-0", "gpu-node-1"}
    assert {p.spec.hostname for p in pods} == {"pair-train-trainer-0-0", "pair-train-trainer-0-1"}
    reports = {
        index: json.loads(pod.status.container_statuses[0].state.terminated.message)
        for index, pod in by_index.items()
    }
    # Pod 0 reports the run; pod 1 its first process's rank (2 of 0..3) and weights.
    assert reports[1]["rank"] == 2
    assert reports[0]["weightsSha256"] == reports[1]["weightsSha256"]
    metrics: dict[str, Any] = status["metrics"]
    assert metrics["worldSize"] == 4
    assert metrics["weightsIdentical"] == 1.0  # all four ranks' digests, gathered on rank 0
    assert metrics["steps"] == 8
    kinds = {a["kind"] for a in status["artifacts"]}
    assert {"adapter", "merged", "onnx", "manifest"} <= kinds


def _pod_process_group(job: str, hostname: str, namespace: str) -> int | None:
    """The node agent runs each pod as a process group; find this pod's by its environment."""
    wanted = {
        f"HOSTNAME={hostname}".encode(),
        f"KUBETUNE_JOB_NAME={job}".encode(),
        f"KUBETUNE_JOB_NAMESPACE={namespace}".encode(),
    }
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                return os.getpgid(int(entry.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return None


def test_a_pod_lost_without_sigterm_restarts_the_group_from_its_checkpoint(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
) -> None:
    steps = 400
    training = {
        **tiny_job("x", s3_seeded)["spec"]["training"],
        "maxSteps": steps,
        "saveSteps": 50,
        "loggingSteps": 1,
    }
    body = tiny_job(
        "gang",
        s3_seeded,
        resources={"gpusPerNode": 1, "nodes": 2, "cpu": 1, "memory": "4Gi"},
        training=training,
        export={"enabled": False},  # the restart is the trainers': no export Job to wait for
    )
    apply_ftj(custom, workspace, body)

    def checkpointed_and_running() -> dict[str, Any] | None:
        status = get_ftj(custom, workspace, "gang").get("status") or {}
        checkpoint = status.get("lastCheckpoint") or {}
        step = (status.get("progress") or {}).get("step") or 0
        return checkpoint if checkpoint and step > checkpoint["step"] else None

    checkpoint = wait_for(checkpointed_and_running, 600, "gang to checkpoint and train on", interval=0.5)
    group = wait_for(
        lambda: _pod_process_group("gang", "gang-train-trainer-0-1", workspace), 30, "pod 1's processes"
    )
    os.killpg(group, signal.SIGKILL)

    wait_for(
        lambda: (_jobset(custom, workspace, "gang-train").get("status") or {}).get("restarts", 0) >= 1,
        180,
        "the JobSet to restart the group",
    )
    status = wait_phase(custom, workspace, "gang", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status
    metrics = status["metrics"]
    # The restarted group resumed from a checkpoint at or after the one seen before the kill...
    assert metrics["resumedFromStep"] >= checkpoint["step"]
    # ...and every rank ended with the same weights.
    assert (metrics["worldSize"], metrics["weightsIdentical"], metrics["steps"]) == (2, 1.0, steps)


def test_the_operator_sees_whether_the_cluster_serves_jobsets(api_client: client.ApiClient) -> None:
    """What a multi-node FineTuneJob's JobSetNotInstalled condition rests on, against the real API server."""
    assert api_served(api_client, *JOBSET[:2], JOBSET[2]) is True
    assert api_served(api_client, "jobset.x-k8s.io", "v1alpha9", "jobsets") is False
    assert api_served(api_client, "nojobset.example.com", "v1", "jobsets") is False

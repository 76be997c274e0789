"""Data-parallel training on the local cluster: two trainer pods on the two GPU nodes, two processes
each (gloo on the CPU), meet at pod 0 through the headless Service's names and end with identical
weights; the export then runs as usual."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from e2e_support import apply_ftj, tiny_job, wait_phase

pytestmark = pytest.mark.cluster


def test_two_pods_with_two_processes_each_train_one_model(
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
    )
    apply_ftj(custom, workspace, body)
    status = wait_phase(custom, workspace, "pair", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status

    pods = core.list_namespaced_pod(workspace, label_selector="batch.kubernetes.io/job-name=pair-train").items
    by_index = {int(p.metadata.labels["batch.kubernetes.io/job-completion-index"]): p for p in pods}
    assert sorted(by_index) == [0, 1]
    assert {p.spec.node_name for p in pods} == {"gpu-node-0", "gpu-node-1"}
    assert {p.spec.hostname for p in pods} == {"pair-train-0", "pair-train-1"}
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

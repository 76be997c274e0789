"""A highly available operator: two replicas, one leading. Killed without warning mid-run, the leader is
replaced by the standby within 30 s, and the run goes on with no duplicate Jobs and no missed phase."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from e2e_support import StatusRecorder, apply_ftj, get_ftj, tiny_job, wait_phase
from operator_replicas import leader_pod, operator_pods
from support import kubectl, wait_for

pytestmark = pytest.mark.cluster

TAKEOVER_SECONDS = 30


def test_the_standby_takes_over_a_killed_leader_within_30s_without_duplicates(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    cluster_env: dict[str, str],
) -> None:
    replicas = wait_for(lambda: len(operator_pods(core)) == 2 and operator_pods(core), 120, "two replicas")
    assert all(c.ready for p in replicas for c in p.status.container_statuses)  # the standby is Ready too
    leader = wait_for(lambda: leader_pod(core), 60, "a leader")

    training = {**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 300}
    manifest = tiny_job("ha", s3_seeded, training=training)
    with StatusRecorder(custom, workspace, "ha") as recorder:
        apply_ftj(custom, workspace, manifest)
        started = wait_phase(custom, workspace, "ha", {"Training"}, 180)
        trainer_uid = batch.read_namespaced_job("ha-train", workspace).metadata.uid

        # A GitOps tool applies the same manifest again (with its own label): no new generation, no new run.
        reapplied = {
            **manifest,
            "metadata": {**manifest["metadata"], "labels": {"app.kubernetes.io/instance": "ha"}},
        }
        kubectl("apply", "-n", workspace, "-f", "-", input=json.dumps(reapplied), cluster_env=cluster_env)
        after = get_ftj(custom, workspace, "ha")
        assert after["metadata"]["generation"] == started["metadata"]["generation"]
        assert after["status"]["runId"] == started["status"]["runId"]

        # SIGKILL: no release of the Lease, no goodbye.
        killed_at = time.monotonic()
        core.delete_namespaced_pod(leader, operator_release, grace_period_seconds=0)
        successor = wait_for(
            lambda: (new := leader_pod(core)) and new != leader and new, TAKEOVER_SECONDS + 5, "a new leader"
        )
        took_over = time.monotonic() - killed_at
        print(f"{successor} took over {took_over:.1f} s after {leader} was killed")
        assert took_over <= TAKEOVER_SECONDS

        done = wait_phase(custom, workspace, "ha", {"Succeeded", "Failed"}, 600)
    assert done["status"]["phase"] == "Succeeded", done["status"]

    jobs = sorted(j.metadata.name for j in batch.list_namespaced_job(workspace).items)
    assert jobs == ["ha-export", "ha-train"]
    assert batch.read_namespaced_job("ha-train", workspace).metadata.uid == trainer_uid
    assert len(core.list_namespaced_pod(workspace, label_selector="job-name=ha-train").items) == 1
    phases = collapse(st.get("phase") for st in recorder.statuses)
    assert phases[-3:] == ["Training", "Exporting", "Succeeded"], phases


def collapse(values: Any) -> list[Any]:
    """Consecutive repeats dropped, and unset values."""
    out: list[Any] = []
    for value in values:
        if value and (not out or out[-1] != value):
            out.append(value)
    return out

"""Losing the trainer pod on the local cluster: deleted, then evicted (as a drain does). Each time the
trainer checkpoints on SIGTERM, the Job starts a replacement that resumes from the checkpoint, and
neither loss counts against backoffLimit (0 here). The loss curve continues the uninterrupted run's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from e2e_support import apply_ftj, deleted, get_ftj, tiny_job, wait_phase
from kubetune_api import RunLayout
from support import wait_for

pytestmark = pytest.mark.cluster

STEPS = 240


# The suspend test needs a run that cannot end before its suspend takes effect: on a quiet machine
# the tiny model trains 240 steps in about 5 s, less than a status report, a suspend and a SIGTERM take.
SUSPEND_STEPS = 2000
# What is tested here ends with training: no export Job to wait for.
NO_EXPORT = {"enabled": False}


def _training(s3_seeded: dict[str, str], steps: int = STEPS, save_steps: int = 100) -> dict[str, Any]:
    base = tiny_job("x", s3_seeded)["spec"]["training"]
    return {**base, "maxSteps": steps, "saveSteps": save_steps, "learningRate": 5e-3, "loggingSteps": 1}


def _trainer_pod(core: client.CoreV1Api, namespace: str, job: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job}").items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return running[0] if running else None


def _progress_step(custom: client.CustomObjectsApi, namespace: str, name: str) -> int:
    return int(
        ((get_ftj(custom, namespace, name).get("status") or {}).get("progress") or {}).get("step") or 0
    )


def _last_checkpoint(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return (get_ftj(custom, namespace, name).get("status") or {}).get("lastCheckpoint") or {}


def _interrupt_when(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    at_step: int,
    evict: bool,
) -> tuple[int, dict[str, Any]]:
    """Once the trainer reports `at_step`, delete or evict its pod; returns the step seen then and the
    checkpoint the trainer wrote on SIGTERM."""
    pod = wait_for(
        lambda: (
            _trainer_pod(core, namespace, f"{name}-train")
            if _progress_step(custom, namespace, name) >= at_step
            else None
        ),
        300,
        f"{name} to reach step {at_step}",
        interval=0.2,
    )
    seen = _progress_step(custom, namespace, name)
    assert seen < STEPS, "the run finished before it could be interrupted"
    pod_name = pod.metadata.name
    if evict:
        core.create_namespaced_pod_eviction(
            pod_name,
            namespace,
            client.V1Eviction(metadata=client.V1ObjectMeta(name=pod_name, namespace=namespace)),
        )
    else:
        core.delete_namespaced_pod(pod_name, namespace)
    # The pod object goes once its process has exited, after uploading the SIGTERM checkpoint (a
    # periodic checkpoint may have been reported in between, so waiting for a step is not enough).
    _wait_gone(core, namespace, pod_name)
    return seen, _last_checkpoint(custom, namespace, name)


def _wait_gone(core: client.CoreV1Api, namespace: str, pod_name: str) -> None:
    wait_for(
        lambda: deleted(lambda: core.read_namespaced_pod(pod_name, namespace)),
        120,
        f"pod {pod_name} to stop and go",
        interval=0.5,
    )


def _losses(s3: Any, output_uri: str, namespace: str, name: str, run_id: str) -> dict[int, float]:
    layout = RunLayout.of(output_uri, namespace, name, run_id)
    bucket, _, prefix = layout.folder("adapter").removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=f"{prefix}/training_log.json")["Body"].read()
    return {e["step"]: e["loss"] for e in json.loads(body) if "loss" in e}


Run = tuple[dict[str, Any], dict[str, Any]]  # the FineTuneJob as applied, and its final status


def assert_same_loss_curve(s3: Any, namespace: str, reference: Run, interrupted: Run, steps: int) -> None:
    """Every step's loss of the interrupted run within 1e-3 of the uninterrupted reference's."""
    expected, actual = (
        {**_losses(s3, body["spec"]["output"]["uri"], namespace, body["metadata"]["name"], status["runId"])}
        for body, status in (reference, interrupted)
    )
    assert sorted(actual) == sorted(expected) == list(range(1, steps + 1))
    worst = max(abs(expected[s] - actual[s]) for s in expected)
    print(f"largest loss difference over {steps} steps: {worst:.2e}")
    assert worst < 1e-3


def test_deleted_and_evicted_trainer_pods_resume_from_their_checkpoints(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    s3: Any,
) -> None:
    steady = tiny_job("steady", s3_seeded, training=_training(s3_seeded), export=NO_EXPORT)
    lossy = tiny_job("lossy", s3_seeded, training=_training(s3_seeded), backoffLimit=0, export=NO_EXPORT)
    apply_ftj(custom, workspace, steady)
    apply_ftj(custom, workspace, lossy)

    deleted_at, first = _interrupt_when(custom, core, workspace, "lossy", 20, evict=False)
    evicted_at, second = _interrupt_when(custom, core, workspace, "lossy", first["step"] + 30, evict=True)

    lossy_done = wait_phase(custom, workspace, "lossy", {"Succeeded", "Failed"}, 900)
    steady_done = wait_phase(custom, workspace, "steady", {"Succeeded", "Failed"}, 900)
    status = lossy_done["status"]
    assert status["phase"] == "Succeeded", status
    assert steady_done["status"]["phase"] == "Succeeded", steady_done["status"]

    # Each SIGTERM finished the running step and saved it: the checkpoint is at or just past what the
    # status showed when the pod was lost, so no completed step was lost.
    assert deleted_at <= first["step"] and evicted_at <= second["step"]
    run_prefix = (
        RunLayout.of(lossy["spec"]["output"]["uri"], workspace, "lossy", status["runId"]).checkpoints + "/"
    )
    assert first["uri"].startswith(run_prefix) and first["time"]
    # The last replacement resumed from the eviction's checkpoint and ran to the end.
    assert status["metrics"]["resumedFromStep"] == second["step"]
    assert status["progress"]["step"] == STEPS
    # backoffLimit is 0: neither loss was counted as a failure; both count towards preemptionLimit.
    assert (batch.read_namespaced_job("lossy-train", workspace).status.failed or 0) == 0
    assert status["preemptions"] == 2

    assert_same_loss_curve(s3, workspace, (steady, steady_done["status"]), (lossy, status), STEPS)


def test_a_suspended_job_checkpoints_and_resumes_where_it_stopped(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    training = _training(s3_seeded, steps=SUSPEND_STEPS, save_steps=500)
    apply_ftj(custom, workspace, tiny_job("pausing", s3_seeded, training=training, export=NO_EXPORT))
    pod = wait_for(
        lambda: (
            _trainer_pod(core, workspace, "pausing-train")
            if _progress_step(custom, workspace, "pausing") >= 20
            else None
        ),
        300,
        "pausing to reach step 20",
        interval=0.2,
    )
    seen = _progress_step(custom, workspace, "pausing")

    def set_suspend(value: bool) -> None:
        custom.patch_namespaced_custom_object(
            "kubetune.dev", "v1alpha1", workspace, "finetunejobs", "pausing", {"spec": {"suspend": value}}
        )

    set_suspend(True)
    wait_phase(custom, workspace, "pausing", {"Suspended"}, 120)
    _wait_gone(core, workspace, pod.metadata.name)
    checkpoint = _last_checkpoint(custom, workspace, "pausing")
    assert seen <= checkpoint["step"] < SUSPEND_STEPS, checkpoint

    set_suspend(False)
    status = wait_phase(custom, workspace, "pausing", {"Succeeded", "Failed"}, 900)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["metrics"]["resumedFromStep"] == checkpoint["step"]
    assert status["progress"]["step"] == SUSPEND_STEPS

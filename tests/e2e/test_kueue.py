"""FineTuneJobs on a shared GPU cluster governed by the real Kueue (hack/cluster up starts it): a queue
with room for one 8-GPU job runs two of them one after the other, and a higher-priority job preempts a
running one, which checkpoints, waits in the queue and resumes where it stopped."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kueue_support import HIGH, LOW, condition, ensure_priority_classes, queue, workloads
from test_finetunejob_resume import STEPS, _last_checkpoint, _losses, _progress_step, _training

from e2e_support import StatusRecorder, apply_ftj, events_for, get_ftj, tiny_job, wait_phase
from support import wait_for

pytestmark = pytest.mark.cluster

EIGHT_GPUS = {"gpusPerNode": 8, "cpu": 1, "memory": "8Gi"}


def test_a_full_queue_holds_the_second_job_with_kueues_reason_until_the_first_finishes(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    with queue(custom, workspace, gpus=8) as local_queue:
        training = {**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 40, "saveSteps": 40}
        first = tiny_job("first", s3_seeded, resources=EIGHT_GPUS, training=training, queueName=local_queue)
        second = tiny_job("second", s3_seeded, resources=EIGHT_GPUS, training=training, queueName=local_queue)
        apply_ftj(custom, workspace, first)
        wait_for(
            lambda: condition(get_ftj(custom, workspace, "first"), "Admitted").get("status") == "True",
            60,
            "the first job to be admitted",
        )
        with StatusRecorder(custom, workspace, "second") as second_statuses:
            apply_ftj(custom, workspace, second)
            queued = wait_phase(custom, workspace, "second", {"Queued"}, 30)
            admitted = condition(queued, "Admitted")
            assert admitted["status"] == "False", admitted
            # Kueue's own words: no room for 8 more GPUs in the flavor.
            assert "nvidia.com/gpu" in admitted["message"], admitted
            first_done = wait_phase(custom, workspace, "first", {"Succeeded", "Failed"}, 600)
            assert first_done["status"]["phase"] == "Succeeded", first_done["status"]
            second_done = wait_phase(custom, workspace, "second", {"Succeeded", "Failed"}, 600)
        assert second_done["status"]["phase"] == "Succeeded", second_done["status"]
        phases = second_statuses.phases()
        assert phases.index("Queued") < phases.index("Training"), phases
        warnings = [e for e in events_for(core, workspace, "second") if e.type == "Warning"]
        assert any("nvidia.com/gpu" in (e.message or "") for e in warnings), [e.message for e in warnings]
        # Both trainers went through Kueue as workloads of their own.
        owners = {w["metadata"]["ownerReferences"][0]["name"] for w in workloads(custom, workspace)}
        assert {"first-train", "second-train"} <= owners


def test_a_higher_priority_job_preempts_a_running_one_which_resumes_from_its_checkpoint(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    batch: client.BatchV1Api,
    s3: Any,
) -> None:
    ensure_priority_classes(custom)
    one_gpu = {"gpusPerNode": 1, "cpu": 1, "memory": "4Gi"}
    training = _training(s3_seeded)
    with queue(custom, workspace, gpus=1) as local_queue:
        # The same training, uninterrupted and outside the queue, is the reference loss curve.
        steady = tiny_job("steady", s3_seeded, resources=one_gpu, training=training)
        victim = tiny_job(
            "victim",
            s3_seeded,
            resources=one_gpu,
            training=training,
            backoffLimit=0,
            queueName=local_queue,
            workloadPriorityClassName=LOW,
        )
        urgent = tiny_job(
            "urgent",
            s3_seeded,
            resources=one_gpu,
            queueName=local_queue,
            workloadPriorityClassName=HIGH,
        )
        apply_ftj(custom, workspace, steady)
        with StatusRecorder(custom, workspace, "victim") as victim_statuses:
            apply_ftj(custom, workspace, victim)
            wait_for(
                lambda: _progress_step(custom, workspace, "victim") >= 20, 300, "victim to reach step 20"
            )
            seen = _progress_step(custom, workspace, "victim")
            assert seen < STEPS, "the victim finished before it could be preempted"
            apply_ftj(custom, workspace, urgent)
            preempted = wait_phase(custom, workspace, "victim", {"Queued"}, 60)
            assert condition(preempted, "Admitted")["reason"] == "Preempted", preempted["status"]
            urgent_done = wait_phase(custom, workspace, "urgent", {"Succeeded", "Failed"}, 600)
            assert urgent_done["status"]["phase"] == "Succeeded", urgent_done["status"]
            checkpoint = _last_checkpoint(custom, workspace, "victim")
            victim_done = wait_phase(custom, workspace, "victim", {"Succeeded", "Failed"}, 900)
            steady_done = wait_phase(custom, workspace, "steady", {"Succeeded", "Failed"}, 900)
        status = victim_done["status"]
        assert status["phase"] == "Succeeded", status
        phases = victim_statuses.phases()
        # Queued while waiting for admission, then again after the preemption.
        assert "Queued" in phases[phases.index("Training") :], phases
        # The SIGTERM checkpoint is at or past the step seen before the preemption, and the resumed
        # trainer started from it.
        assert seen <= checkpoint["step"] < STEPS
        assert status["metrics"]["resumedFromStep"] == checkpoint["step"]
        # backoffLimit is 0 and untouched: the preemption was not a failure.
        assert (batch.read_namespaced_job("victim-train", workspace).status.failed or 0) == 0

    steady_losses = _losses(s3, steady["spec"]["output"]["uri"], steady_done["status"]["runId"])
    victim_losses = _losses(s3, victim["spec"]["output"]["uri"], status["runId"])
    assert sorted(victim_losses) == sorted(steady_losses) == list(range(1, STEPS + 1))
    worst = max(abs(steady_losses[s] - victim_losses[s]) for s in steady_losses)
    print(f"largest loss difference over {STEPS} steps after a preemption: {worst:.2e}")
    assert worst < 1e-3

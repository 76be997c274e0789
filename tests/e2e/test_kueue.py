"""FineTuneJobs on a shared GPU cluster governed by the real Kueue (hack/cluster up starts it): a queue
with room for one 8-GPU job runs two of them one after the other, and a higher-priority job preempts a
running one, which checkpoints, waits in the queue and resumes where it stopped."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kueue_support import HIGH, LOW, condition, ensure_priority_classes, queue, workloads
from test_finetunejob_resume import STEPS, _progress_step, _training, assert_same_loss_curve

from e2e_support import StatusRecorder, apply_ftj, events_once, get_ftj, tiny_job, wait_phase
from support import wait_for

pytestmark = pytest.mark.cluster

# Two processes per trainer, not eight: the queue is full all the same, at a quarter of the CPU time.
TWO_GPUS = {"gpusPerNode": 2, "cpu": 1, "memory": "8Gi"}
# Admission, quota and preemption concern the trainers: no export Job to wait for.
NO_EXPORT = {"enabled": False}


def test_a_full_queue_holds_the_second_job_with_kueues_reason_until_the_first_finishes(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    with queue(custom, workspace, gpus=2) as local_queue:
        training = {**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 40, "saveSteps": 40}
        first, second = (
            tiny_job(
                name,
                s3_seeded,
                resources=TWO_GPUS,
                training=training,
                queueName=local_queue,
                export=NO_EXPORT,
            )
            for name in ("first", "second")
        )
        apply_ftj(custom, workspace, first)
        wait_for(
            lambda: condition(get_ftj(custom, workspace, "first"), "Admitted").get("status") == "True",
            60,
            "the first job to be admitted",
        )
        with StatusRecorder(custom, workspace, "second") as second_statuses:
            apply_ftj(custom, workspace, second)
            wait_phase(custom, workspace, "second", {"Queued"}, 30)
            # Kueue's own words, once it has tried the workload: no room for 2 more GPUs in the flavor.
            admitted = wait_for(
                lambda: (
                    (c := condition(get_ftj(custom, workspace, "second"), "Admitted"))
                    and "nvidia.com/gpu" in (c.get("message") or "")
                    and c
                ),
                30,
                "Kueue's verdict on the second job",
            )
            assert admitted["status"] == "False", admitted
            first_done = wait_phase(custom, workspace, "first", {"Succeeded", "Failed"}, 600)
            assert first_done["status"]["phase"] == "Succeeded", first_done["status"]
            second_done = wait_phase(custom, workspace, "second", {"Succeeded", "Failed"}, 600)
        assert second_done["status"]["phase"] == "Succeeded", second_done["status"]
        phases = second_statuses.phases()
        assert phases.index("Queued") < phases.index("Training"), phases
        events_once(
            core,
            workspace,
            "second",
            lambda ev: any(e.type == "Warning" and "nvidia.com/gpu" in (e.message or "") for e in ev),
            "a Warning Event naming nvidia.com/gpu",
        )
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
        steady = tiny_job("steady", s3_seeded, resources=one_gpu, training=training, export=NO_EXPORT)
        victim = tiny_job(
            "victim",
            s3_seeded,
            resources=one_gpu,
            training=training,
            backoffLimit=0,
            queueName=local_queue,
            workloadPriorityClassName=LOW,
            export=NO_EXPORT,
        )
        urgent = tiny_job(
            "urgent",
            s3_seeded,
            resources=one_gpu,
            queueName=local_queue,
            workloadPriorityClassName=HIGH,
            export=NO_EXPORT,
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
            victim_done = wait_phase(custom, workspace, "victim", {"Succeeded", "Failed"}, 900)
            steady_done = wait_phase(custom, workspace, "steady", {"Succeeded", "Failed"}, 900)
        status = victim_done["status"]
        assert status["phase"] == "Succeeded", status
        phases = victim_statuses.phases()
        # Queued while waiting for admission, then again after the preemption.
        assert "Queued" in phases[phases.index("Training") :], phases
        # The checkpoint the preempted trainer wrote on SIGTERM (the last one reported before it was
        # readmitted) is at or past the step seen before the preemption; the readmitted trainer resumed
        # from it.
        phases_seen = [st.get("phase") for st in victim_statuses.statuses]
        trained = phases_seen.index("Training")
        preempted_at = phases_seen.index("Queued", trained)
        readmitted = phases_seen.index("Training", preempted_at)
        while_queued = [
            st["lastCheckpoint"]["step"]
            for st in victim_statuses.statuses[:readmitted]
            if st.get("lastCheckpoint")
        ]
        assert while_queued, "no checkpoint reported before the readmission"
        assert seen <= while_queued[-1] < STEPS
        assert status["metrics"]["resumedFromStep"] == while_queued[-1]
        # backoffLimit is 0 and untouched: the preemption was not a failure, but a checkpointed stop.
        assert (batch.read_namespaced_job("victim-train", workspace).status.failed or 0) == 0
        assert status["preemptions"] >= 1

    assert_same_loss_curve(s3, workspace, (steady, steady_done["status"]), (victim, status), STEPS)

"""policies/queue.py and scheduling.py: a queued child waits with Kueue's own reason; the operator
never unsuspends it, and carries spec.suspend to the Workload's spec.active. Pods that cannot run
report the scheduler's, the quota's or the kubelet's words."""

from __future__ import annotations

from typing import Any

import pytest
from builder_cases import SETTINGS
from child_cases import NOW, STARTED, T_COMPLETE, T_RUNNING, cond, job, pod, with_run
from operator_cases import serialize, set_, tiny

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.builders import jobs, names
from kubetune_operator.observation import Children, Observed, observe
from kubetune_operator.policies import queue, suspend
from kubetune_operator.policies.decide import decide
from kubetune_operator.scheduling import admission, event_problem, pod_problem
from kubetune_operator.services.reconcile import _condition_events
from kubetune_operator.status import new_status

QUEUED = set_("spec.queueName", "team-a")
INSUFFICIENT = (
    "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, "
    "8 more needed"
)


def workload(owner: str, *conditions: dict[str, Any], active: bool = True) -> dict[str, Any]:
    """A Kueue Workload as v0.17 reports it, owned by the child Job or JobSet `owner`."""
    return {
        "metadata": {"name": f"job-{owner}-1a2b3", "ownerReferences": [{"kind": "Job", "name": owner}]},
        "spec": {"active": active},
        "status": {"conditions": list(conditions)},
    }


def status_cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


PENDING = status_cond("QuotaReserved", "False", "Pending", INSUFFICIENT)
ADMITTED = status_cond("Admitted", "True", "Admitted", "The workload is admitted")
PREEMPTED = status_cond("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: 42)")


def seen(ftj: FineTuneJob, trainer_job: dict[str, Any], *, pods: list[Any] = (), **raw: Any) -> Observed:  # type: ignore[assignment]
    trainer_job = with_run((trainer_job, []), ftj.spec_hash())[0]
    return observe(ftj, Children(jobs=[trainer_job], pods=list(pods), **raw))


def test_a_queued_job_is_created_suspended_with_kueues_labels() -> None:
    ftj = tiny(QUEUED, set_("spec.workloadPriorityClassName", "high"))
    for built in (serialize(jobs.trainer_job(ftj, SETTINGS)), serialize(jobs.export_job(ftj, SETTINGS))):
        assert built["spec"]["suspend"] is True
        assert built["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        assert built["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    plain = serialize(jobs.trainer_job(tiny(), SETTINGS))
    assert (
        plain["spec"]["suspend"] is False and "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    )


def test_the_queue_label_on_the_finetunejob_also_queues_it() -> None:
    ftj = tiny(set_("metadata.labels", {"kueue.x-k8s.io/queue-name": "team-b"}))
    assert ftj.queue_name == "team-b"
    built = serialize(jobs.trainer_job(ftj, SETTINGS))
    assert built["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-b"


def test_held_by_kueue_is_queued_with_kueues_reason_and_message() -> None:
    ftj = tiny(QUEUED)
    held = job("trainer", suspend=True, conditions=(cond("Suspended", "JobSuspended"),))
    decision = decide(ftj, seen(ftj, held, workloads={"tiny-train": workload("tiny-train", PENDING)}), NOW)
    assert decision.phase == Phase.QUEUED
    assert INSUFFICIENT in decision.message
    assert decision.admitted is not None
    assert (decision.admitted.status, decision.admitted.reason) == (ConditionStatus.FALSE, "Pending")
    conditions = {c.type: c for c in new_status(ftj, decision, NOW).conditions}
    assert conditions["Admitted"].message == f"queue team-a: {INSUFFICIENT}"
    assert conditions["PodsReady"].status == ConditionStatus.FALSE


def test_before_kueue_made_a_workload_the_job_is_queued_too() -> None:
    ftj = tiny(QUEUED)
    decision = decide(ftj, seen(ftj, job("trainer", suspend=True)), NOW)
    assert decision.phase == Phase.QUEUED and queue.NO_WORKLOAD_YET in decision.message


def test_a_preempted_job_is_queued_again_with_the_eviction_reason() -> None:
    ftj = tiny(QUEUED, set_("status.lastCheckpoint", {"step": 40, "uri": "s3://b/c/checkpoints/step-40/"}))
    held = job("trainer", suspend=True, startTime=STARTED, conditions=(cond("Suspended", "JobSuspended"),))
    observed = seen(ftj, held, workloads={"tiny-train": workload("tiny-train", PREEMPTED, PENDING)})
    decision = decide(ftj, observed, NOW)
    assert decision.phase == Phase.QUEUED
    assert decision.admitted is not None and decision.admitted.reason == "Preempted"


def test_an_admitted_job_trains_and_says_so() -> None:
    ftj = tiny(QUEUED)
    running = T_RUNNING[0]
    decision = decide(
        ftj,
        seen(ftj, running, pods=T_RUNNING[1], workloads={"tiny-train": workload("tiny-train", ADMITTED)}),
        NOW,
    )
    assert decision.phase == Phase.TRAINING
    assert decision.admitted is not None and decision.admitted.status == ConditionStatus.TRUE


def test_the_operator_never_unsuspends_what_kueue_holds() -> None:
    ftj = tiny(QUEUED)
    held = seen(ftj, job("trainer", suspend=True), workloads={"tiny-train": workload("tiny-train", PENDING)})
    assert suspend.job_patches(ftj, held) == []
    assert queue.workload_patches(ftj, held) == []


def test_spec_suspend_of_a_queued_job_deactivates_its_workload_and_back() -> None:
    ftj = tiny(QUEUED, set_("spec.suspend", True))
    running = seen(ftj, T_RUNNING[0], workloads={"tiny-train": workload("tiny-train", ADMITTED)})
    assert queue.workload_patches(ftj, running) == [("job-tiny-train-1a2b3", False)]
    assert decide(ftj, running, NOW).phase == Phase.SUSPENDED
    resumed = tiny(QUEUED)
    inactive = seen(
        resumed, job("trainer", suspend=True), workloads={"tiny-train": workload("tiny-train", active=False)}
    )
    assert queue.workload_patches(resumed, inactive) == [("job-tiny-train-1a2b3", True)]


def test_a_queued_export_waits_in_the_queue_after_training() -> None:
    ftj = tiny(QUEUED)
    trainer_job, trainer_pods = with_run(T_COMPLETE, ftj.spec_hash())
    export = {**job("exporter", suspend=True), "metadata": {**job("exporter")["metadata"]}}
    export["metadata"]["labels"][names.RUN_ID_LABEL] = ftj.spec_hash()
    raw = Children(
        jobs=[trainer_job, export],
        pods=trainer_pods,
        workloads={"tiny-export": workload("tiny-export", PENDING)},
    )
    decision = decide(ftj, observe(ftj, raw), NOW)
    assert decision.phase == Phase.QUEUED
    assert decision.trained.status == ConditionStatus.TRUE


# --- scheduling problems, in the words of whoever refused -------------------------------------------

SCHEDULER_MESSAGE = (
    "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
    "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available"
)
QUOTA_MESSAGE = (
    'Error creating: pods "tiny-train-x" is forbidden: exceeded quota: gpus, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=0"
)
KUBELET_MESSAGE = 'secret "missing-creds" not found'


def pending_pod(**status: Any) -> dict[str, Any]:
    p = pod("trainer", "tiny-train-a", None)
    p["status"] = {"phase": "Pending", **status}
    return p


@pytest.mark.parametrize(
    ("pods", "events", "reason", "message"),
    [
        (
            [
                pending_pod(
                    conditions=[status_cond("PodScheduled", "False", "Unschedulable", SCHEDULER_MESSAGE)]
                )
            ],
            [],
            "Unschedulable",
            SCHEDULER_MESSAGE,
        ),
        (
            [],
            [{"reason": "FailedCreate", "message": QUOTA_MESSAGE, "lastTimestamp": STARTED}],
            "FailedCreate",
            QUOTA_MESSAGE,
        ),
        (
            [
                pending_pod(
                    containerStatuses=[
                        {
                            "name": "trainer",
                            "state": {
                                "waiting": {
                                    "reason": "CreateContainerConfigError",
                                    "message": KUBELET_MESSAGE,
                                }
                            },
                        }
                    ]
                )
            ],
            [],
            "CreateContainerConfigError",
            KUBELET_MESSAGE,
        ),
    ],
    ids=["unschedulable", "quota", "missing-secret"],
)
def test_pods_that_cannot_run_say_why(pods: list[Any], events: list[Any], reason: str, message: str) -> None:
    ftj = tiny()
    waiting = job("trainer", active=len(pods), startTime=STARTED)
    decision = decide(ftj, seen(ftj, waiting, pods=pods, events={"tiny-train": events}), NOW)
    assert decision.phase == Phase.PENDING and decision.reason == reason
    assert message in decision.message
    assert decision.pods_ready is not None
    assert tuple(decision.pods_ready) == (ConditionStatus.FALSE, reason, message)


def test_scheduling_readers_ignore_what_is_fine() -> None:
    assert pod_problem([pod("trainer", "tiny-train-a", None)]) is None
    assert pod_problem([pending_pod(conditions=[status_cond("PodScheduled", "True", "")])]) is None
    assert event_problem([{"reason": "SuccessfulCreate", "message": "Created pod"}]) is None
    latest = event_problem(
        [
            {"reason": "FailedCreate", "message": "old", "lastTimestamp": "2025-03-01T10:00:00Z"},
            {"reason": "FailedCreate", "message": "new", "lastTimestamp": "2025-03-01T11:00:00Z"},
        ]
    )
    assert latest is not None and latest.message == "new"


def test_an_admission_without_conditions_is_pending() -> None:
    a = admission({"metadata": {"name": "w"}, "spec": {}})
    assert (a.admitted, a.active, a.reason, a.evaluated) == (False, True, "Pending", False)


def test_kueues_verdict_is_a_warning_event_and_the_wait_for_a_workload_is_not() -> None:
    ftj = tiny(QUEUED)
    held = job("trainer", suspend=True, conditions=(cond("Suspended", "JobSuspended"),))
    no_workload = decide(ftj, seen(ftj, held), NOW)
    assert no_workload.admitted is not None and no_workload.admitted.reason == queue.WAITING_FOR_WORKLOAD
    assert _condition_events(ftj, no_workload) == []
    # A Workload Kueue has not evaluated yet: still the operator's own wait, no Event. (Posting one here
    # would keep Kueue's verdict, which has the same reason, out of the Events.)
    unseen = tiny(QUEUED, set_("status", status_of(ftj, no_workload)))
    not_evaluated = decide(unseen, seen(unseen, held, workloads={"tiny-train": workload("tiny-train")}), NOW)
    assert not_evaluated.admitted is not None and not_evaluated.admitted.reason == queue.WAITING_FOR_VERDICT
    assert _condition_events(unseen, not_evaluated) == []
    # The next pass sees Kueue's verdict: one Warning with its words, then none while it holds.
    before = tiny(QUEUED, set_("status", status_of(unseen, not_evaluated)))
    pending = decide(
        before, seen(before, held, workloads={"tiny-train": workload("tiny-train", PENDING)}), NOW
    )
    (event,) = _condition_events(before, pending)
    assert (event.type, event.reason) == ("Warning", "Pending") and INSUFFICIENT in event.message
    after = tiny(QUEUED, set_("status", status_of(before, pending)))
    assert _condition_events(after, pending) == []


def status_of(ftj: FineTuneJob, decision: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = new_status(ftj, decision, NOW).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return dumped

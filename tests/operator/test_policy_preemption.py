"""policies/preemption.py: checkpointed stops are not failures, but they have a cap. A stopped pod
vanishes from the API soon after it exits, so a Job's stops are its replacement pods less the
failures it counted, tallied in the status from pass to pass."""

from __future__ import annotations

from typing import Any

from child_cases import NOW, STARTED, job, pod, with_run
from operator_cases import set_, tiny

from kubetune_api import FineTuneJob, Phase
from kubetune_operator.observation import Children, Observed, child_jobset, observe
from kubetune_operator.policies import preemption
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action
from kubetune_operator.status import new_status


def running(ftj: FineTuneJob, pod_name: str, failed: int = 0, *kept: dict[str, Any]) -> Observed:
    """The trainer Job running `pod_name`, with `failed` counted failures and their `kept` pods."""
    trainer_job = job("trainer", active=1, ready=1, failed=failed, startTime=STARTED)
    trainer_job, pods = with_run((trainer_job, [*kept, pod("trainer", pod_name, None)]), ftj.spec_hash())
    return observe(ftj, Children(jobs=[trainer_job], pods=pods))


def next_pass(ftj: FineTuneJob, seen: Observed) -> FineTuneJob:
    """The FineTuneJob as the status written by a pass that saw `seen` leaves it."""
    status = new_status(ftj, decide(ftj, seen, NOW), NOW)
    body = ftj.model_dump(mode="json", by_alias=True)
    return FineTuneJob.from_k8s({**body, "status": status.model_dump(mode="json", by_alias=True)})


def test_each_replacement_pod_is_a_stop_counted_once_across_passes() -> None:
    ftj = tiny()
    ftj = next_pass(ftj, running(ftj, "tiny-train-a"))
    assert (ftj.status.preemptions, ftj.status.trainer_pods) == (None, ["tiny-train-a"])
    ftj = next_pass(ftj, running(ftj, "tiny-train-a"))  # the same pod, seen again
    assert ftj.status.preemptions is None
    ftj = next_pass(ftj, Observed())  # preempted: its pod is gone, and for a while no Job is seen
    ftj = next_pass(ftj, running(ftj, "tiny-train-b"))  # the replacement
    assert (ftj.status.preemptions, ftj.status.trainer_pods_seen) == (1, 2)
    ftj = next_pass(ftj, running(ftj, "tiny-train-b"))
    ftj = next_pass(ftj, running(ftj, "tiny-train-c"))
    assert ftj.status.preemptions == 2


def test_a_replacement_after_a_counted_failure_is_not_a_stop() -> None:
    ftj = tiny()
    ftj = next_pass(ftj, running(ftj, "tiny-train-a"))
    crashed = pod("trainer", "tiny-train-a", 1, "Error", "boom", STARTED)
    ftj = next_pass(ftj, running(ftj, "tiny-train-b", 1, crashed))
    assert ftj.status.preemptions is None
    lost = pod("trainer", "tiny-train-b", 8, "Error", "did not upload", STARTED, "EvictionByEvictionAPI")
    ftj = next_pass(ftj, running(ftj, "tiny-train-c", 2, crashed, lost))
    assert (ftj.status.preemptions, ftj.status.lost_checkpoints) == (None, 1)


def test_a_run_stopped_more_often_than_its_limit_fails_and_its_trainer_is_stopped() -> None:
    ftj = tiny(set_("spec.preemptionLimit", 1))
    for name in ("tiny-train-a", "tiny-train-b"):
        ftj = next_pass(ftj, running(ftj, name))
    assert ftj.status.preemptions == 1 and ftj.status.phase == Phase.TRAINING  # at the limit
    decision = decide(ftj, running(ftj, "tiny-train-c"), NOW)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.FAILED,
        "PreemptionLimitExceeded",
        Action.STOP_UNFINISHED,
    )
    assert decision.trained.reason == "PreemptionLimitExceeded"
    assert "stopped 2 times" in decision.message and "preemptionLimit (1)" in decision.message


def test_the_count_is_remembered_once_the_trainer_job_is_gone_until_the_limit_is_raised() -> None:
    ftj = tiny(set_("spec.preemptionLimit", 2))
    failed = tiny(
        set_("spec.preemptionLimit", 2),
        set_("status.runId", ftj.spec_hash()),
        set_("status.preemptions", 3),
    )
    assert decide(failed, Observed(), NOW).reason == "PreemptionLimitExceeded"  # no new trainer is created
    raised = tiny(
        set_("spec.preemptionLimit", 5),
        set_("status.runId", ftj.spec_hash()),
        set_("status.preemptions", 3),
    )
    assert raised.spec_hash() == ftj.spec_hash()  # a live edit: the same run resumes
    decision = decide(raised, Observed(), NOW)
    assert (decision.action, decision.stops.count) == (Action.CREATE_TRAINER, 3)


def test_another_runs_tally_is_not_this_runs() -> None:
    ftj = tiny(
        set_("status.runId", "0123456789ab"),
        set_("status.preemptions", 9),
        set_("status.trainerPods", ["tiny-train-x"]),
        set_("status.trainerPodsSeen", 10),
    )
    assert preemption.observe(ftj, None).count == 0
    assert preemption.observe(ftj, running(ftj, "tiny-train-a").trainer).count == 0


def test_a_jobset_counts_its_group_restarts_that_did_not_count_against_max_restarts() -> None:
    jobset = {
        "metadata": {"name": "tiny-train"},
        "spec": {"failurePolicy": {"maxRestarts": 2}},
        "status": {"restarts": 5, "restartsCountTowardsMax": 1},
    }
    assert preemption.observe(tiny(), child_jobset(jobset, [])).count == 4

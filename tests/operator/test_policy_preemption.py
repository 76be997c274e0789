"""policies/preemption.py: checkpointed stops are not failures, but they have a cap, remembered in the
status so that it holds after the trainer Job is gone."""

from __future__ import annotations

from typing import Any

import pytest
from child_cases import NOW, STARTED, job, pod, with_run
from operator_cases import set_, tiny

from kubetune_api import FineTuneJob, Phase
from kubetune_operator.observation import Children, Observed, child_jobset, observe
from kubetune_operator.policies import preemption
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action
from kubetune_operator.status import new_status


def stopped(exit_code: int, index: int, disruption: str | None = None) -> dict[str, Any]:
    return pod("trainer", f"tiny-train-{index}", exit_code, "Error", "", STARTED, disruption)


def running_after(ftj: FineTuneJob, *stopped_pods: dict[str, Any]) -> Observed:
    trainer_job = job("trainer", active=1, ready=1, startTime=STARTED)
    pods = [*stopped_pods, pod("trainer", "tiny-train-now", None)]
    trainer_job, pods = with_run((trainer_job, pods), ftj.spec_hash())
    return observe(ftj, Children(jobs=[trainer_job], pods=pods))


@pytest.mark.parametrize(
    ("pods", "stops"),
    [
        ((), 0),
        ((stopped(7, 1), stopped(7, 2)), 2),
        # A pod preempted by the scheduler or evicted: SIGKILLed before its checkpoint, still not its fault.
        ((stopped(137, 1, "PreemptionByScheduler"),), 1),
        ((stopped(143, 1, "EvictionByEvictionAPI"), stopped(7, 2)), 2),
        # Its own crash, and a lost checkpoint: backoffLimit counts those, not this policy.
        ((stopped(1, 1), stopped(8, 2, "EvictionByEvictionAPI")), 0),
    ],
    ids=["none", "checkpointed", "preempted", "evicted-and-checkpointed", "failures"],
)
def test_checkpointed_and_disrupted_stops_are_counted(pods: tuple[dict[str, Any], ...], stops: int) -> None:
    ftj = tiny()
    decision = decide(ftj, running_after(ftj, *pods), NOW)
    assert decision.phase == Phase.TRAINING
    assert decision.preemptions == (stops or None)
    assert new_status(ftj, decision, NOW).preemptions == (stops or None)


def test_a_run_stopped_more_often_than_its_limit_fails_and_its_trainer_is_stopped() -> None:
    ftj = tiny(set_("spec.preemptionLimit", 2))
    decision = decide(ftj, running_after(ftj, stopped(7, 1), stopped(7, 2), stopped(7, 3)), NOW)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.FAILED,
        "PreemptionLimitExceeded",
        Action.STOP_UNFINISHED,
    )
    assert decision.trained.reason == "PreemptionLimitExceeded"
    assert "stopped 3 times" in decision.message and "preemptionLimit (2)" in decision.message
    at_limit = tiny(set_("spec.preemptionLimit", 3))
    assert decide(
        at_limit, running_after(at_limit, stopped(7, 1), stopped(7, 2), stopped(7, 3)), NOW
    ).phase == (Phase.TRAINING)


def test_the_count_is_remembered_once_the_trainer_job_is_gone_until_the_limit_is_raised() -> None:
    ftj = tiny(set_("spec.preemptionLimit", 2))
    failed = tiny(
        set_("spec.preemptionLimit", 2),
        set_("status.runId", ftj.spec_hash()),
        set_("status.preemptions", 3),
    )
    gone = Observed()
    assert decide(failed, gone, NOW).reason == "PreemptionLimitExceeded"  # no new trainer is created
    raised = tiny(
        set_("spec.preemptionLimit", 5),
        set_("status.runId", ftj.spec_hash()),
        set_("status.preemptions", 3),
    )
    assert raised.spec_hash() == ftj.spec_hash()  # a live edit: the same run resumes
    decision = decide(raised, gone, NOW)
    assert (decision.action, decision.preemptions) == (Action.CREATE_TRAINER, 3)


def test_another_runs_count_is_not_this_runs() -> None:
    ftj = tiny(
        set_("spec.preemptionLimit", 2), set_("status.runId", "0123456789ab"), set_("status.preemptions", 9)
    )
    assert preemption.count(ftj, None) == 0


def test_a_jobset_counts_its_group_restarts_that_did_not_count_against_max_restarts() -> None:
    jobset = {
        "metadata": {"name": "tiny-train"},
        "spec": {"failurePolicy": {"maxRestarts": 2}},
        "status": {"restarts": 5, "restartsCountTowardsMax": 1},
    }
    assert preemption.observed_stops(child_jobset(jobset, [])) == 4

"""decide(): the lifecycle of a run that nothing disturbs, from no children to trained and exported.
The policies' own cases are in test_policy_*.py; every case checks the decision and the status."""

from __future__ import annotations

import pytest
from child_cases import (
    ADAPTER,
    E_RUNNING,
    EXPORT_DISABLED,
    EXPORT_METRICS,
    NOW,
    STARTED,
    T_COMPLETE,
    T_CREATED,
    T_NO_STATUS,
    T_RUNNING,
    TRAINER_METRICS,
    Case,
    Child,
    F,
    T,
    ago,
    check_decision,
    check_status,
    e_complete,
    job,
    observed,
    pod,
    result,
)
from operator_cases import tiny

from kubetune_api import Phase
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action

CASES = [
    Case("no-children", None, None, Phase.PENDING, Action.CREATE_TRAINER, reason="Creating"),
    Case("trainer-created", *(T_CREATED, None), Phase.PENDING, reason="Scheduling", says=("waiting",)),
    Case("trainer-without-status", *(T_NO_STATUS, None), Phase.PENDING, reason="Scheduling"),
    Case("trainer-running", *(T_RUNNING, None), Phase.TRAINING, reason="Training", says=("tiny-train",)),
    Case(
        "trained-export-disabled",
        *(T_COMPLETE, None),
        Phase.SUCCEEDED,
        edits=(EXPORT_DISABLED,),
        reason="Succeeded",
        says=("export is disabled",),
        trained=T,
        exported=F,
        kstatus=(T, F, F),
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        "trained-no-exporter",
        *(T_COMPLETE, None),
        Phase.EXPORTING,
        Action.CREATE_EXPORTER,
        reason="Creating",
        trained=T,
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        "exporter-running",
        *(T_COMPLETE, E_RUNNING),
        Phase.EXPORTING,
        reason="Exporting",
        says=("tiny-export",),
        trained=T,
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        "exported",
        *(T_COMPLETE, e_complete(ago(10))),
        Phase.SUCCEEDED,
        reason="Succeeded",
        trained=T,
        exported=T,
        kstatus=(T, F, F),
        metrics={**TRAINER_METRICS, **EXPORT_METRICS},
        artifacts=("adapter", "onnx"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    check_decision(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_status(case: Case) -> None:
    check_status(case)


def test_an_unscheduled_trainer_is_pending() -> None:
    ftj = tiny()
    unscheduled = pod("trainer", "tiny-train-a", None)
    unscheduled["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    }
    trainer: Child = (job("trainer", active=1, ready=0, startTime=STARTED), [unscheduled])
    assert decide(ftj, observed(ftj, trainer, None), NOW).phase == Phase.PENDING


def test_a_succeeded_trainer_pod_starts_the_export_before_the_job_controller_syncs() -> None:
    """The Job controller marks the Job Complete a sync after its pod succeeded; a one-completion
    Job's succeeded pod is already enough to move on."""
    ftj = tiny()
    finished = ago(1)
    trainer: Child = (
        job("trainer", active=1, ready=0, startTime=STARTED),
        [pod("trainer", "tiny-train-a", 0, "Completed", result(TRAINER_METRICS, ADAPTER), finished)],
    )
    decision = decide(ftj, observed(ftj, trainer, None), NOW)
    assert (decision.phase, decision.action) == (Phase.EXPORTING, Action.CREATE_EXPORTER)
    assert decision.trained.status == "True"


def test_children_are_found_by_their_fixed_names() -> None:
    """Jobs and pods of another name (a FineTuneJob's leftovers, someone else's Job) are not ours."""
    ftj = tiny()
    other_job, other_pods = T_RUNNING
    other_job = {**other_job, "metadata": {**other_job["metadata"], "name": "tiny-old"}}
    assert decide(ftj, observed(ftj, (other_job, other_pods), None), NOW).action == Action.CREATE_TRAINER

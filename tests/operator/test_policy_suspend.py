"""policies/suspend.py: spec.suspend stops the unfinished stage through its Job's own suspend."""

from __future__ import annotations

import pytest
from child_cases import (
    E_FAILED,
    E_RUNNING,
    T_COMPLETE,
    T_DATA_ERROR,
    T_RUNNING,
    T_SUSPENDED,
    TRAINER_METRICS,
    Case,
    Child,
    F,
    T,
    ago,
    check_decision,
    check_status,
    cond,
    e_complete,
    job,
    observed,
)
from operator_cases import set_, tiny

from kubetune_api import Phase
from kubetune_operator.policies import suspend
from kubetune_operator.policies.decision import Action

SUSPEND = set_("spec.suspend", True)
E_SUSPENDED: Child = (job("exporter", suspend=True, conditions=(cond("Suspended", "JobSuspended"),)), [])

CASES = [
    Case(
        "suspended-while-running",
        *(T_RUNNING, None),
        Phase.SUSPENDED,
        edits=(SUSPEND,),
        reason="Suspended",
        says=("spec.suspend",),
        kstatus=(T, F, F),
    ),
    Case(
        "suspended-before-start", *(T_SUSPENDED, None), Phase.SUSPENDED, edits=(SUSPEND,), kstatus=(T, F, F)
    ),
    Case(
        "suspend-without-children-still-creates",
        None,
        None,
        Phase.PENDING,
        Action.CREATE_TRAINER,
        edits=(SUSPEND,),
    ),
    Case(
        "suspend-while-exporting",
        *(T_COMPLETE, E_SUSPENDED),
        Phase.SUSPENDED,
        edits=(SUSPEND,),
        says=("the export is stopped",),
        trained=T,
        kstatus=(T, F, F),
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        # The export Job is created suspended: resuming needs nothing but the flag.
        "suspend-after-training-still-creates-the-export",
        *(T_COMPLETE, None),
        Phase.EXPORTING,
        Action.CREATE_EXPORTER,
        edits=(SUSPEND,),
        trained=T,
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        "a-failure-wins-over-suspend",
        *(T_DATA_ERROR, None),
        Phase.FAILED,
        edits=(SUSPEND,),
        trained=F,
        kstatus=(F, F, T),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    check_decision(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_status(case: Case) -> None:
    check_status(case)


@pytest.mark.parametrize(
    ("suspended", "trainer", "exporter", "patches"),
    [
        (True, T_RUNNING, None, [("tiny-train", True)]),
        (False, T_SUSPENDED, None, [("tiny-train", False)]),
        (True, T_SUSPENDED, None, []),  # already so
        (False, T_RUNNING, None, []),
        (True, T_COMPLETE, E_RUNNING, [("tiny-export", True)]),  # a finished trainer stays as it is
        (False, T_COMPLETE, E_SUSPENDED, [("tiny-export", False)]),
        (True, T_COMPLETE, e_complete(ago(5)), []),
        (True, T_COMPLETE, E_FAILED, []),
        (True, T_DATA_ERROR, None, []),
    ],
    ids=[
        "suspend-trainer",
        "resume-trainer",
        "trainer-already-suspended",
        "trainer-already-running",
        "suspend-export",
        "resume-export",
        "export-done",
        "export-failed",
        "trainer-failed",
    ],
)
def test_job_patches(
    suspended: bool, trainer: Child, exporter: Child | None, patches: list[tuple[str, bool]]
) -> None:
    ftj = tiny(set_("spec.suspend", suspended))
    assert suspend.job_patches(ftj, observed(ftj, trainer, exporter)) == patches


def test_suspend_changes_no_run() -> None:
    """Suspending keeps the run id: the resumed trainer continues from its checkpoints."""
    assert tiny(SUSPEND).spec_hash() == tiny().spec_hash()
    ftj = tiny(SUSPEND)
    assert suspend.training_suspended(ftj) is not None
    assert suspend.training_suspended(tiny()) is None

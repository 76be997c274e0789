"""policies/ttl.py: a finished FineTuneJob gets its completionTime, and is deleted once
ttlSecondsAfterFinished (3600 s in the tiny example) has passed since then."""

from __future__ import annotations

from datetime import timedelta

import pytest
from child_cases import (
    EXPORT_DISABLED,
    EXPORT_METRICS,
    NOW,
    T_COMPLETE,
    T_DATA_ERROR,
    T_RUNNING,
    TRAINER_METRICS,
    Case,
    F,
    T,
    ago,
    check_decision,
    check_status,
    e_complete,
    observed,
    t_complete,
)
from operator_cases import delete, set_, tiny

from kubetune_api import Phase
from kubetune_operator.policies import ttl
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, parse_time

CASES = [
    Case(
        "ttl-passed",
        *(T_COMPLETE, e_complete(ago(3601))),
        Phase.SUCCEEDED,
        Action.DELETE_FINETUNEJOB,
        trained=T,
        exported=T,
        kstatus=(T, F, F),
        metrics={**TRAINER_METRICS, **EXPORT_METRICS},
        artifacts=("adapter", "onnx"),
    ),
    Case(
        "ttl-not-passed",
        *(T_COMPLETE, e_complete(ago(3599))),
        Phase.SUCCEEDED,
        trained=T,
        exported=T,
        kstatus=(T, F, F),
        metrics={**TRAINER_METRICS, **EXPORT_METRICS},
        artifacts=("adapter", "onnx"),
    ),
    Case(
        "no-ttl-keeps-forever",
        *(T_COMPLETE, e_complete(ago(10**7))),
        Phase.SUCCEEDED,
        edits=(delete("spec.ttlSecondsAfterFinished"),),
        trained=T,
        exported=T,
        kstatus=(T, F, F),
        metrics={**TRAINER_METRICS, **EXPORT_METRICS},
        artifacts=("adapter", "onnx"),
    ),
    Case(
        "ttl-passed-export-disabled",
        *(t_complete(3700), None),
        Phase.SUCCEEDED,
        Action.DELETE_FINETUNEJOB,
        edits=(EXPORT_DISABLED,),
        trained=T,
        exported=F,
        kstatus=(T, F, F),
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        # A failed Job has no completionTime: the time comes from the status written when it failed.
        "ttl-passed-failed-job",
        *(T_DATA_ERROR, None),
        Phase.FAILED,
        Action.DELETE_FINETUNEJOB,
        trained=F,
        kstatus=(F, F, T),
        old_status={"phase": "Failed", "completionTime": ago(3600)},
    ),
    Case(
        "ttl-not-passed-failed-job",
        *(T_DATA_ERROR, None),
        Phase.FAILED,
        trained=F,
        kstatus=(F, F, T),
        old_status={"phase": "Failed", "completionTime": ago(60)},
    ),
    Case(
        "ttl-zero-deletes-at-once",
        *(T_DATA_ERROR, None),
        Phase.FAILED,
        Action.DELETE_FINETUNEJOB,
        edits=(set_("spec.ttlSecondsAfterFinished", 0),),
        trained=F,
        kstatus=(F, F, T),
    ),
    Case(
        # Only a finished run expires, however long ago it started.
        "a-running-job-never-expires",
        *(T_RUNNING, None),
        Phase.TRAINING,
        edits=(set_("spec.ttlSecondsAfterFinished", 0),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    check_decision(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_status(case: Case) -> None:
    check_status(case)


@pytest.mark.parametrize(
    ("ttl_seconds", "finished_ago", "expired"),
    [(None, 10**9, False), (0, 0, True), (60, 59, False), (60, 60, True), (60, 61, True)],
)
def test_expired(ttl_seconds: int | None, finished_ago: float, expired: bool) -> None:
    assert ttl.expired(ttl_seconds, NOW - timedelta(seconds=finished_ago), NOW) is expired


@pytest.mark.parametrize(
    ("old_status", "completed", "expected"),
    [
        ({}, ago(10), ago(10)),  # the Job's completionTime
        ({}, None, ago(0)),  # a failed Job has none: now
        ({"completionTime": ago(100)}, ago(10), ago(100)),  # kept once set
    ],
    ids=["from-the-job", "now", "kept"],
)
def test_completion_time(old_status: dict[str, str], completed: str | None, expected: str) -> None:
    ftj = tiny(EXPORT_DISABLED, set_("status", old_status))
    job_, pods = t_complete(10)
    job_ = {**job_, "status": {**job_["status"], "completionTime": completed}}
    decision = decide(ftj, observed(ftj, (job_, pods), None), NOW)
    assert decision.completion_time == parse_time(expected)

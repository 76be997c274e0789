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

from kubetune_api import FineTuneJob, Phase
from kubetune_operator.observation import Observed
from kubetune_operator.policies import ttl
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, parse_time
from kubetune_operator.status import new_status

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


# --- the Jobs of a finished run -----------------------------------------------------------------------


def _succeeded_run(ftj: FineTuneJob) -> Observed:
    return observed(ftj, T_COMPLETE, e_complete(ago(60)))


def test_the_jobs_of_a_finished_run_get_the_operators_ttl_and_an_unfinished_runs_do_not() -> None:
    ftj = tiny()
    done = _succeeded_run(ftj)
    assert ttl.job_patches(done, 3600) == [
        ("Job", "tiny-train", {"spec": {"ttlSecondsAfterFinished": 3600}}),
        ("Job", "tiny-export", {"spec": {"ttlSecondsAfterFinished": 3600}}),
    ]
    assert ttl.job_patches(done, None) == []
    decision = decide(ftj, observed(ftj, T_RUNNING, None), NOW)
    assert not decision.finished  # the reconciler patches only finished runs (services/reconcile.py)


def test_a_finished_run_whose_jobs_are_gone_stays_as_recorded() -> None:
    ftj = tiny()
    recorded = new_status(ftj, decide(ftj, _succeeded_run(ftj), NOW), NOW)
    cleaned = FineTuneJob.from_k8s(
        {
            **ftj.model_dump(mode="json", by_alias=True),
            "status": recorded.model_dump(mode="json", by_alias=True),
        }
    )
    later = NOW + timedelta(minutes=30)  # the Jobs expired; the FineTuneJob's own TTL has not
    decision = decide(cleaned, Observed(), later)
    assert (decision.phase, decision.action) == (Phase.SUCCEEDED, Action.NONE)  # no new trainer
    again = new_status(cleaned, decision, later)
    assert again.artifacts == recorded.artifacts and again.metrics == recorded.metrics
    assert again.completion_time == recorded.completion_time
    assert [c.status for c in again.conditions] == [c.status for c in recorded.conditions]


def test_a_failed_run_whose_jobs_are_gone_is_retried_only_by_a_spec_edit() -> None:
    ftj = tiny()
    failed = decide(ftj, observed(ftj, T_DATA_ERROR, None), NOW)
    assert failed.phase == Phase.FAILED
    recorded = new_status(ftj, failed, NOW).model_dump(mode="json", by_alias=True)
    body = {**ftj.model_dump(mode="json", by_alias=True), "status": recorded}
    assert decide(FineTuneJob.from_k8s(body), Observed(), NOW).phase == Phase.FAILED
    edited = {**body, "metadata": {**body["metadata"], "generation": body["metadata"]["generation"] + 1}}
    assert decide(FineTuneJob.from_k8s(edited), Observed(), NOW).action == Action.CREATE_TRAINER

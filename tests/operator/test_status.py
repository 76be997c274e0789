"""status.new_status() and status.invalid_spec_status(): the status a decision leads to. The phase and
conditions of every policy case are checked in test_decide.py and test_policy_*.py."""

from __future__ import annotations

from typing import Any

from child_cases import (
    ADAPTER,
    EXPORT_DISABLED,
    NOW,
    OLD,
    STARTED,
    T_COMPLETE,
    T_RUNNING,
    Child,
    F,
    T,
    U,
    ago,
    checkpoint_of,
    cond,
    e_complete,
    job,
    observed,
)
from operator_cases import set_, tiny

from kubetune_api import FineTuneJob, FineTuneJobStatus
from kubetune_operator.policies.decide import decide
from kubetune_operator.status import invalid_spec_status, new_status

Obj = dict[str, Any]


def status_of(ftj: FineTuneJob, trainer: Child | None, exporter: Child | None = None) -> Obj:
    return new_status(ftj, decide(ftj, observed(ftj, trainer, exporter), NOW), NOW).operator_fields()


def test_status_times_come_from_the_jobs() -> None:
    completed = ago(10)
    status = status_of(tiny(), T_COMPLETE, e_complete(completed))
    assert status["startTime"] == STARTED
    assert status["completionTime"] == completed
    assert status["exportJobName"] == "tiny-export"


def test_no_export_job_name_when_export_is_disabled() -> None:
    status = status_of(tiny(EXPORT_DISABLED), T_COMPLETE)
    assert status["phase"] == "Succeeded"
    assert status["exportJobName"] is None


def test_start_time_survives_suspend_and_resume() -> None:
    first = "2025-03-01T08:00:00Z"
    ftj = tiny(set_("status", {"phase": "Suspended", "runId": tiny().spec_hash(), "startTime": first}))
    resumed: Child = (job("trainer", active=1, ready=1, startTime=STARTED), [])
    assert status_of(ftj, resumed)["startTime"] == first


def test_status_keeps_earlier_results_of_the_same_run() -> None:
    # Pods can be garbage-collected after success; what they reported stays in the status.
    ftj = tiny(EXPORT_DISABLED)
    old = {
        "phase": "Succeeded",
        "runId": ftj.spec_hash(),
        "artifacts": [ADAPTER],
        "metrics": {"evalLoss": 1.0},
    }
    ftj = tiny(EXPORT_DISABLED, set_("status", old))
    trainer: Child = (job("trainer", succeeded=1, completionTime=ago(5), conditions=(cond("Complete"),)), [])
    status = status_of(ftj, trainer)
    assert status["metrics"] == {"evalLoss": 1.0}
    assert [a["kind"] for a in status["artifacts"]] == ["adapter"]


def test_the_trainers_fields_of_the_same_run_are_carried_over() -> None:
    ftj = tiny()
    reported = {
        "progress": {"step": 3, "metrics": {"evalLoss": 2.0}},
        "lastCheckpoint": checkpoint_of(ftj, 2),
    }
    ftj = tiny(set_("status", {"runId": ftj.spec_hash(), **reported}))
    new = new_status(ftj, decide(ftj, observed(ftj, T_RUNNING, None), NOW), NOW)
    assert (new.progress, new.last_checkpoint) == (ftj.status.progress, ftj.status.last_checkpoint)
    # Live metrics stay the trainer's; status.metrics holds only the final ones.
    assert new.metrics == {}


# --- conditions' lastTransitionTime -------------------------------------------------------------------


def _old_conditions(statuses: dict[str, str]) -> list[Obj]:
    return [
        {"type": t, "status": s, "reason": "Old", "message": "old", "lastTransitionTime": OLD.isoformat()}
        for t, s in statuses.items()
    ]


def test_transition_time_moves_only_when_a_condition_flips() -> None:
    # Was Training; the trainer finished, so Trained flips Unknown -> True and the rest stay.
    old = {"Ready": F, "Reconciling": T, "Stalled": F, "Trained": U, "Exported": U}
    ftj = tiny(set_("status", {"phase": "Training", "conditions": _old_conditions(old)}))
    status = status_of(ftj, T_COMPLETE)
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    old_time, now_time = "2025-03-01T09:00:00Z", "2025-03-01T12:00:00Z"
    assert times == {
        "Ready": old_time,
        "Reconciling": old_time,
        "Stalled": old_time,
        "Trained": now_time,
        "Exported": old_time,
    }
    # Reason and message follow the latest observation even when the status stays.
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("Creating", "creating the export Job")


def test_transition_time_of_a_new_condition_is_now() -> None:
    status = status_of(tiny(), None)
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2025-03-01T12:00:00Z"}


# --- invalid specs ------------------------------------------------------------------------------------


def test_invalid_spec_status() -> None:
    old = FineTuneJobStatus.model_validate(
        {
            "phase": "Training",
            "runId": "0123456789ab",
            "conditions": _old_conditions({"Ready": F, "Reconciling": T, "Stalled": F, "Trained": U}),
            "progress": {"step": 3},
            "lastCheckpoint": {"step": 2, "uri": "s3://b/c"},
        }
    )
    new = invalid_spec_status(old, 4, "invalid spec: resources.nodes > 1", NOW)
    # The trainer's fields are left as they are: the writer never sends them here.
    assert (new.progress, new.last_checkpoint) == (old.progress, old.last_checkpoint)
    status = new.operator_fields()
    assert status["phase"] == "Failed"
    assert status["message"] == "invalid spec: resources.nodes > 1"
    assert status["observedGeneration"] == 4
    assert status["runId"] == "0123456789ab"
    assert "progress" not in status and "lastCheckpoint" not in status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert list(conditions) == ["Ready", "Reconciling", "Stalled"]
    assert {t: c["status"] for t, c in conditions.items()} == {"Ready": F, "Reconciling": F, "Stalled": T}
    assert {c["reason"] for c in conditions.values()} == {"InvalidSpec"}
    assert {c["message"] for c in conditions.values()} == {"invalid spec: resources.nodes > 1"}
    assert {c["observedGeneration"] for c in conditions.values()} == {4}
    times = {t: c["lastTransitionTime"] for t, c in conditions.items()}
    assert times == {
        "Ready": "2025-03-01T09:00:00Z",  # was False already
        "Reconciling": "2025-03-01T12:00:00Z",
        "Stalled": "2025-03-01T12:00:00Z",
    }


def test_invalid_spec_status_from_nothing() -> None:
    status = invalid_spec_status(FineTuneJobStatus(), None, "bad", NOW).operator_fields()
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] is None
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2025-03-01T12:00:00Z"}

"""policies/new_run.py: a spec change replaces the previous run's Jobs, and nothing of that run
(results, start time, the trainer's progress and checkpoint) carries over."""

from __future__ import annotations

import pytest
from child_cases import (
    ADAPTER,
    E_RUNNING,
    NOW,
    STALE_RUN,
    T_COMPLETE,
    T_CREATED,
    T_RUNNING,
    Case,
    check_decision,
    check_status,
    checkpoint_of,
    observed,
    with_run,
)
from operator_cases import set_, tiny

from kubetune_api import Phase
from kubetune_operator.policies import new_run
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action
from kubetune_operator.services.status_writer import patch
from kubetune_operator.status import new_status

RUN = tiny().spec_hash()
STALE_CHECKPOINT = {"step": 40, "uri": f"s3://kubetune-dev/runs/tiny/{STALE_RUN}/checkpoints/checkpoint-40"}

CASES = [
    Case(
        "replacement-pod-resumes",
        *(T_CREATED, None),
        Phase.PENDING,
        reason="Scheduling",
        says=("resumes from the checkpoint of step 40",),
        old_status={"runId": RUN, "lastCheckpoint": checkpoint_of(tiny(), 40)},
    ),
    Case(
        "another-runs-checkpoint-is-not-resumed",
        *(T_CREATED, None),
        Phase.PENDING,
        reason="Scheduling",
        never_says=("resumes",),
        old_status={"runId": "0123456789ab", "lastCheckpoint": {"step": 40, "uri": "s3://b/old"}},
        clears_trainer_fields=True,
    ),
    Case(
        # A stale trainer reported its checkpoint after the status had moved on to this run.
        "a-stale-trainers-late-checkpoint-is-not-resumed",
        *(T_CREATED, None),
        Phase.PENDING,
        reason="Scheduling",
        never_says=("resumes",),
        old_status={"runId": RUN, "lastCheckpoint": STALE_CHECKPOINT},
        clears_trainer_fields=True,
    ),
    Case(
        "stale-trainer",
        *(with_run(T_RUNNING, STALE_RUN), None),
        Phase.PENDING,
        Action.DELETE_STALE,
        reason="SpecChanged",
    ),
    Case(
        "stale-exporter",
        *(T_COMPLETE, with_run(E_RUNNING, STALE_RUN)),
        Phase.PENDING,
        Action.DELETE_STALE,
        reason="SpecChanged",
    ),
    Case(
        # The status already names the new run, but the old Jobs are still being deleted: their trainer
        # may still report, so its fields keep being cleared.
        "stale-trainer-after-the-status-moved-on",
        *(with_run(T_RUNNING, STALE_RUN), None),
        Phase.PENDING,
        Action.DELETE_STALE,
        old_status={"runId": RUN, "progress": {"step": 3}},
        clears_trainer_fields=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    check_decision(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_status(case: Case) -> None:
    check_status(case)


def test_a_new_run_does_not_inherit_the_previous_runs_results() -> None:
    old = {
        "phase": "Succeeded",
        "runId": STALE_RUN,
        "artifacts": [ADAPTER],
        "metrics": {"evalLoss": 1.0},
        "progress": {"step": 5, "metrics": {"evalLoss": 1.0}},
        "lastCheckpoint": STALE_CHECKPOINT,
    }
    ftj = tiny(set_("status", old))
    decision = decide(ftj, observed(ftj, with_run(T_COMPLETE, STALE_RUN), None), NOW)
    assert decision.action == Action.DELETE_STALE
    new = new_status(ftj, decision, NOW)
    assert new.run_id == ftj.spec_hash()
    assert (new.artifacts, new.metrics, new.progress, new.last_checkpoint) == ([], {}, None, None)
    # A merge patch removes map keys and fields only when they are sent as null.
    body = patch(ftj.status, new, new_run.clear_trainer_fields(ftj, decision))
    assert body is not None
    assert (body["artifacts"], body["metrics"]) == ([], {"evalLoss": None})
    assert body["progress"] is None and body["lastCheckpoint"] is None


@pytest.mark.parametrize(
    ("status_run", "children_run", "same"),
    [
        (None, None, False),  # the first pass
        (RUN, None, True),
        (RUN, RUN, True),
        (STALE_RUN, None, False),  # the spec changed, the old Jobs are gone
        (RUN, STALE_RUN, False),  # the old Jobs are still being deleted
    ],
)
def test_same_run(status_run: str | None, children_run: str | None, same: bool) -> None:
    ftj = tiny(set_("status", {"runId": status_run} if status_run else {}))
    trainer = with_run(T_RUNNING, children_run) if children_run else None
    decision = decide(ftj, observed(ftj, trainer, None), NOW)
    assert new_run.same_run(ftj, decision) is same


@pytest.mark.parametrize(
    ("status", "cleared"),
    [
        ({}, False),
        ({"runId": RUN, "progress": {"step": 3}}, False),
        ({"runId": RUN, "progress": {"step": 3}, "lastCheckpoint": checkpoint_of(tiny(), 2)}, False),
        ({"runId": RUN, "lastCheckpoint": STALE_CHECKPOINT}, True),
        ({"runId": STALE_RUN, "progress": {"step": 3}}, True),
        ({"runId": STALE_RUN}, True),  # nothing to clear: the writer then has nothing to send for it
    ],
    ids=["nothing", "progress", "own-checkpoint", "foreign-checkpoint", "other-run", "other-run-empty"],
)
def test_clear_trainer_fields(status: dict[str, object], cleared: bool) -> None:
    ftj = tiny(set_("status", status))
    decision = decide(ftj, observed(ftj, T_RUNNING, None), NOW)
    assert new_run.clear_trainer_fields(ftj, decision) is cleared

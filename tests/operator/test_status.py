"""status.decide() and status.new_status(): observed children in, phase, conditions and action out.

Observations are built the way the operator builds them, with observation.child_job() over small Job
and Pod dicts shaped like what the API server returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_cases import GENERATION, Edit, delete, set_, tiny

from kubetune_api import FineTuneJob, FineTuneJobStatus, Phase
from kubetune_operator.builders import names
from kubetune_operator.observation import Observed, child_job
from kubetune_operator.status import Action, decide, invalid_spec_status, new_status

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
STARTED = "2025-03-01T11:00:00Z"
OLD = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
STALE_RUN = "000000000000"
SHA = "ab" * 32

Obj = dict[str, Any]


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def cond(type_: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": "True", "reason": reason, "message": message}


def job(
    component: str,
    *,
    run_id: str | None = None,
    suspend: bool = False,
    conditions: tuple[Obj, ...] = (),
    **status: Any,
) -> Obj:
    """A child Job; status keys are the API's (active, ready, failed, startTime, completionTime)."""
    labels = {names.FINETUNEJOB_LABEL: "tiny", names.COMPONENT_LABEL: component}
    if run_id is not None:
        labels[names.RUN_ID_LABEL] = run_id
    suffix = "train" if component == names.TRAINER else "export"
    return {
        "metadata": {"name": f"tiny-{suffix}", "labels": labels},
        "spec": {"suspend": suspend},
        "status": {**status, "conditions": list(conditions)},
    }


def pod(
    component: str, name: str, exit_code: int | None, reason: str = "", message: str = "", at: str = ""
) -> Obj:
    """A child pod; exit_code None: its container is still running."""
    state: Obj = {"running": {"startedAt": STARTED}}
    if exit_code is not None:
        state = {
            "terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": at}
        }
    return {
        "metadata": {"name": name, "labels": {names.COMPONENT_LABEL: component}},
        "status": {"containerStatuses": [{"name": component, "state": state}]},
    }


def result(metrics: Obj, *artifacts: Obj) -> str:
    """The JSON document a successful trainer or exporter leaves as its termination message."""
    return json.dumps({"metrics": metrics, "artifacts": list(artifacts)})


ADAPTER = {"kind": "adapter", "uri": "s3://kubetune-dev/runs/tiny/adapter/", "sizeBytes": 10, "sha256": SHA}
ONNX = {"kind": "onnx", "uri": "s3://kubetune-dev/runs/tiny/onnx/", "sizeBytes": 1, "sha256": "cd" * 32}

# Children, as Job and pods.
Child = tuple[Obj, list[Obj]]

T_CREATED: Child = (job("trainer", active=1), [])
T_NO_STATUS: Child = ({**job("trainer"), "status": {}}, [])
T_RUNNING = (job("trainer", active=1, ready=1, startTime=STARTED), [pod("trainer", "tiny-train-a", None)])
T_SUSPENDED: Child = (
    job("trainer", suspend=True, conditions=(cond("Suspended", "JobSuspended"),)),
    [],
)
T_RETRYING = (
    job("trainer", failed=1, startTime=STARTED),
    [
        pod(
            "trainer",
            "tiny-train-a",
            1,
            "Error",
            "Traceback (most recent call last):\nRuntimeError: boom\n",
            ago(5),
        )
    ],
)
T_DATA_ERROR = (
    job(
        "trainer",
        failed=1,
        startTime=STARTED,
        conditions=(cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),),
    ),
    [pod("trainer", "tiny-train-a", 3, "Error", "row 7: missing field 'tone'", ago(30))],
)
T_OOM = (
    job(
        "trainer",
        failed=3,
        startTime=STARTED,
        conditions=(cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),),
    ),
    [pod("trainer", f"tiny-train-{i}", 137, "OOMKilled", "", ago(300 - i)) for i in range(3)],
)
T_DEADLINE: Child = (
    job(
        "trainer",
        startTime=STARTED,
        conditions=(cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),),
    ),
    [],
)
TRAINER_METRICS = {"trainLoss": 1.5, "evalLoss": 1.25}


def t_complete(seconds_ago: float) -> Child:
    """A trainer that succeeded on its second attempt (the result is the last pod's)."""
    completed = ago(seconds_ago)
    return (
        job(
            "trainer",
            succeeded=1,
            startTime=STARTED,
            completionTime=completed,
            conditions=(cond("Complete"),),
        ),
        [
            pod("trainer", "tiny-train-b", 0, "Completed", result(TRAINER_METRICS, ADAPTER), completed),
            pod("trainer", "tiny-train-a", 1, "Error", "transient", ago(seconds_ago + 100)),
        ],
    )


T_COMPLETE = t_complete(600)
E_RUNNING = (job("exporter", active=1, ready=1, startTime=ago(60)), [pod("exporter", "tiny-export-a", None)])
E_FAILED = (
    job(
        "exporter", failed=1, conditions=(cond("Failed", "PodFailurePolicy", "exit code 6 matched FailJob"),)
    ),
    [pod("exporter", "tiny-export-a", 6, "Error", "parity 0.50 is below minParity 0.90\n", ago(10))],
)
EXPORT_METRICS = {"parityMatchRate": 1.0, "onnxSizeBytes": 1234}


def e_complete(completed: str) -> Child:
    return (
        job(
            "exporter",
            succeeded=1,
            startTime=ago(700),
            completionTime=completed,
            conditions=(cond("Complete"),),
        ),
        [pod("exporter", "tiny-export-a", 0, "Completed", result(EXPORT_METRICS, ONNX), completed)],
    )


def with_run(child: Child, run_id: str) -> Child:
    job_, pods = child
    labels = {**job_["metadata"]["labels"], names.RUN_ID_LABEL: run_id}
    return {**job_, "metadata": {**job_["metadata"], "labels": labels}}, pods


def observe(ftj: FineTuneJob, trainer: Child | None, exporter: Child | None) -> Observed:
    """Children of the current run unless a case labels them with another run id."""

    def one(child: Child | None) -> Any:
        if child is None:
            return None
        job_, pods = child
        if names.RUN_ID_LABEL not in job_["metadata"]["labels"]:
            job_, pods = with_run(child, ftj.spec_hash())
        return child_job(job_, pods)

    return Observed(trainer=one(trainer), exporter=one(exporter))


# --- decide() -----------------------------------------------------------------------------------------

U, T, F = "Unknown", "True", "False"
EXPORT_DISABLED = set_("spec.export.enabled", False)


@dataclass(frozen=True)
class Case:
    id: str
    trainer: Child | None
    exporter: Child | None
    phase: Phase
    action: Action = Action.NONE
    edits: tuple[Edit, ...] = ()
    reason: str | None = None
    says: tuple[str, ...] = ()  # substrings of the message
    never_says: tuple[str, ...] = ()
    trained: str = U
    exported: str = U
    # Ready, Reconciling, Stalled (Trained and Exported are the fields above)
    kstatus: tuple[str, str, str] = (F, T, F)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()  # kinds
    old_status: Obj = field(default_factory=dict)


CASES = [
    Case("no-children", None, None, Phase.PENDING, Action.CREATE_TRAINER, reason="Creating"),
    Case("trainer-created", *(T_CREATED, None), Phase.PENDING, reason="Scheduling", says=("waiting",)),
    Case("trainer-without-status", *(T_NO_STATUS, None), Phase.PENDING, reason="Scheduling"),
    Case(
        "replacement-pod-resumes",
        *(T_CREATED, None),
        Phase.PENDING,
        reason="Scheduling",
        says=("resumes from the checkpoint of step 40",),
        old_status={
            "runId": tiny().spec_hash(),
            "lastCheckpoint": {"step": 40, "uri": "s3://b/runs/x/checkpoints/checkpoint-40"},
        },
    ),
    Case(
        "another-runs-checkpoint-is-not-resumed",
        *(T_CREATED, None),
        Phase.PENDING,
        reason="Scheduling",
        never_says=("resumes",),
        old_status={"runId": "0123456789ab", "lastCheckpoint": {"step": 40, "uri": "s3://b/old"}},
    ),
    Case("trainer-running", *(T_RUNNING, None), Phase.TRAINING, reason="Training", says=("tiny-train",)),
    Case(
        "suspended-while-running",
        *(T_RUNNING, None),
        Phase.SUSPENDED,
        edits=(set_("spec.suspend", True),),
        reason="Suspended",
        says=("spec.suspend",),
        kstatus=(F, F, F),
    ),
    Case(
        "suspended-before-start",
        *(T_SUSPENDED, None),
        Phase.SUSPENDED,
        edits=(set_("spec.suspend", True),),
        kstatus=(F, F, F),
    ),
    Case(
        "suspend-without-children-still-creates",
        None,
        None,
        Phase.PENDING,
        Action.CREATE_TRAINER,
        edits=(set_("spec.suspend", True),),
    ),
    Case(
        "retrying-after-a-failure",
        *(T_RETRYING, None),
        Phase.PENDING,
        says=("1 failed attempt", "exit code 1 (unexpected error): RuntimeError: boom"),
    ),
    Case(
        "trainer-dataset-error",
        *(T_DATA_ERROR, None),
        Phase.FAILED,
        reason="TrainingFailed",
        says=("dataset error", "row 7: missing field 'tone'", "exit code 3"),
        never_says=("BackoffLimitExceeded",),
        trained=F,
        kstatus=(F, F, T),
    ),
    Case(
        "trainer-oom-killed",
        *(T_OOM, None),
        Phase.FAILED,
        reason="TrainingFailed",
        says=("OOM", "spec.resources.memory", "tiny-train-2"),
        never_says=("BackoffLimitExceeded",),
        trained=F,
        kstatus=(F, F, T),
    ),
    Case(
        "trainer-deadline-without-pods",
        *(T_DEADLINE, None),
        Phase.FAILED,
        reason="TrainingFailed",
        says=("DeadlineExceeded", "active longer than specified deadline"),
        trained=F,
        kstatus=(F, F, T),
    ),
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
        "exporter-failed",
        *(T_COMPLETE, E_FAILED),
        Phase.FAILED,
        reason="ExportFailed",
        says=("export failed", "exit code 6 (export error)", "parity 0.50 is below minParity 0.90"),
        never_says=("PodFailurePolicy",),
        trained=T,
        exported=F,
        kstatus=(F, F, T),
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
]


def ftj_for(case: Case) -> FineTuneJob:
    return tiny(*case.edits, set_("status", case.old_status))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    ftj = ftj_for(case)
    decision = decide(ftj, observe(ftj, case.trainer, case.exporter), NOW)
    assert (decision.phase, decision.action) == (case.phase, case.action)
    if case.reason is not None:
        assert decision.reason == case.reason
    for text in case.says:
        assert text in decision.message
    for text in case.never_says:
        assert text not in decision.message
    assert (decision.trained[0].value, decision.exported[0].value) == (case.trained, case.exported)
    assert decision.metrics == case.metrics
    assert tuple(a.kind.value for a in decision.artifacts) == case.artifacts


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_new_status(case: Case) -> None:
    ftj = ftj_for(case)
    decision = decide(ftj, observe(ftj, case.trainer, case.exporter), NOW)
    status = new_status(ftj, decision, NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert list(conditions) == ["Ready", "Reconciling", "Stalled", "Trained", "Exported"]
    assert tuple(conditions[t]["status"] for t in ("Ready", "Reconciling", "Stalled")) == case.kstatus
    assert (conditions["Trained"]["status"], conditions["Exported"]["status"]) == (
        case.trained,
        case.exported,
    )
    assert {c["observedGeneration"] for c in conditions.values()} == {GENERATION}
    assert status["phase"] == case.phase.value
    assert status["observedGeneration"] == GENERATION
    assert status["runId"] == ftj.spec_hash()
    assert status["trainerJobName"] == "tiny-train"
    assert status["message"] == decision.message
    assert conditions["Ready"]["reason"] == decision.reason
    assert status["metrics"] == case.metrics
    assert [a["kind"] for a in status["artifacts"]] == list(case.artifacts)
    terminal = case.phase in (Phase.SUCCEEDED, Phase.FAILED)
    assert (status["completionTime"] is not None) is terminal
    if case.old_status.get("runId") in (None, ftj.spec_hash()):
        assert "progress" not in status and "lastCheckpoint" not in status  # the trainer's fields
    else:  # a previous run's are cleared
        assert status["progress"] is None and status["lastCheckpoint"] is None
    FineTuneJobStatus.model_validate({k: v for k, v in status.items() if v is not None})


def test_status_times_come_from_the_jobs() -> None:
    ftj = tiny()
    completed = ago(10)
    status = new_status(ftj, decide(ftj, observe(ftj, T_COMPLETE, e_complete(completed)), NOW), NOW)
    assert status["startTime"] == STARTED
    assert status["completionTime"] == completed
    assert status["exportJobName"] == "tiny-export"


def test_artifacts_and_metrics_are_parsed_from_the_termination_message() -> None:
    ftj = tiny()
    message = json.dumps(
        {
            "metrics": {"evalLoss": 0.5, "steps": 5, "note": "text", "flag": True},
            "artifacts": [
                {"kind": "onnx", "uri": "s3://kubetune-dev/runs/tiny/onnx/", "sizeBytes": 1, "sha256": SHA},
                {"kind": "onnx", "uri": "s3://x/bad-sha", "sha256": "not-hex"},
                {"kind": "unknown-kind", "uri": "s3://x/y"},
            ],
        }
    )
    exporter: Child = (
        job("exporter", succeeded=1, completionTime=ago(5), conditions=(cond("Complete"),)),
        [pod("exporter", "tiny-export-a", 0, "Completed", message, ago(5))],
    )
    decision = decide(ftj, observe(ftj, T_COMPLETE, exporter), NOW)
    assert decision.metrics == {**TRAINER_METRICS, "evalLoss": 0.5, "steps": 5.0}
    onnx = decision.artifacts[-1]
    assert len(decision.artifacts) == 2  # the adapter, and the one valid onnx entry
    assert (onnx.kind.value, onnx.uri, onnx.size_bytes, onnx.sha256) == (
        "onnx",
        "s3://kubetune-dev/runs/tiny/onnx/",
        1,
        SHA,
    )


@pytest.mark.parametrize(
    "message",
    [
        "",
        "not json",
        "[1, 2]",
        '{"metrics": {"evalLoss": 1.0',  # cut at the kubelet's 4096-byte limit
        pytest.param(
            '{"metrics": "none", "artifacts": 5}',
            id="wrong-types",
        ),
    ],
)
def test_an_unreadable_result_gives_no_metrics(message: str) -> None:
    ftj = tiny(EXPORT_DISABLED)
    trainer: Child = (
        job("trainer", succeeded=1, completionTime=ago(5), conditions=(cond("Complete"),)),
        [pod("trainer", "tiny-train-a", 0, "Completed", message, ago(5))],
    )
    decision = decide(ftj, observe(ftj, trainer, None), NOW)
    assert decision.phase == Phase.SUCCEEDED
    assert (decision.metrics, decision.artifacts) == ({}, [])


def test_pods_of_other_containers_are_ignored() -> None:
    ftj = tiny()
    sidecar = pod("trainer", "tiny-train-a", 3, "Error", "row 1: bad", ago(5))
    sidecar["status"]["containerStatuses"][0]["name"] = "istio-proxy"
    failed = job("trainer", failed=1, conditions=(cond("Failed", "BackoffLimitExceeded", "limit"),))
    decision = decide(ftj, observe(ftj, (failed, [sidecar]), None), NOW)
    assert "row 1" not in decision.message
    assert "BackoffLimitExceeded" in decision.message


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
    status = new_status(ftj, decide(ftj, observe(ftj, T_COMPLETE, None), NOW), NOW)
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
    ftj = tiny()
    status = new_status(ftj, decide(ftj, observe(ftj, None, None), NOW), NOW)
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2025-03-01T12:00:00Z"}


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
    status = new_status(ftj, decide(ftj, observe(ftj, trainer, None), NOW), NOW)
    assert status["metrics"] == {"evalLoss": 1.0}
    assert [a["kind"] for a in status["artifacts"]] == ["adapter"]


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
    status = invalid_spec_status(old, 4, "invalid spec: resources.nodes > 1", NOW)
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
    status = invalid_spec_status(FineTuneJobStatus(), None, "bad", NOW)
    assert status["phase"] == "Failed"
    assert status["observedGeneration"] is None
    assert {c["lastTransitionTime"] for c in status["conditions"]} == {"2025-03-01T12:00:00Z"}


# --- known bugs ---------------------------------------------------------------------------------------


def test_no_export_job_name_when_export_is_disabled() -> None:
    ftj = tiny(EXPORT_DISABLED)
    status = new_status(ftj, decide(ftj, observe(ftj, T_COMPLETE, None), NOW), NOW)
    assert status["phase"] == "Succeeded"
    assert status["exportJobName"] is None


def test_a_new_run_does_not_inherit_the_previous_runs_results() -> None:
    old = {"phase": "Succeeded", "runId": STALE_RUN, "artifacts": [ADAPTER], "metrics": {"evalLoss": 1.0}}
    ftj = tiny(set_("status", old))
    decision = decide(ftj, observe(ftj, with_run(T_COMPLETE, STALE_RUN), None), NOW)
    assert decision.action == Action.DELETE_STALE
    status = new_status(ftj, decision, NOW)
    assert status["runId"] == ftj.spec_hash()
    # A merge patch removes map keys and fields only when they are sent as null.
    assert (status["artifacts"], status["metrics"]) == ([], {"evalLoss": None})
    assert status["progress"] is None and status["lastCheckpoint"] is None


def test_suspend_while_exporting_is_reported_as_suspended() -> None:
    ftj = tiny(set_("spec.suspend", True))
    exporter: Child = (job("exporter", suspend=True, conditions=(cond("Suspended", "JobSuspended"),)), [])
    decision = decide(ftj, observe(ftj, T_COMPLETE, exporter), NOW)
    assert decision.phase == Phase.SUSPENDED


def test_an_unscheduled_trainer_is_pending() -> None:
    ftj = tiny()
    unscheduled = pod("trainer", "tiny-train-a", None)
    unscheduled["status"] = {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    }
    trainer: Child = (job("trainer", active=1, ready=0, startTime=STARTED), [unscheduled])
    assert decide(ftj, observe(ftj, trainer, None), NOW).phase == Phase.PENDING


def test_start_time_survives_suspend_and_resume() -> None:
    first = "2025-03-01T08:00:00Z"
    ftj = tiny(set_("status", {"phase": "Suspended", "runId": tiny().spec_hash(), "startTime": first}))
    resumed: Child = (job("trainer", active=1, ready=1, startTime=STARTED), [])
    status = new_status(ftj, decide(ftj, observe(ftj, resumed, None), NOW), NOW)
    assert status["startTime"] == first


def test_a_succeeded_trainer_pod_starts_the_export_before_the_job_controller_syncs() -> None:
    """The Job controller marks the Job Complete a sync after its pod succeeded; a one-completion
    Job's succeeded pod is already enough to move on."""
    ftj = tiny()
    finished = ago(1)
    trainer: Child = (
        job("trainer", active=1, ready=0, startTime=STARTED),
        [pod("trainer", "tiny-train-a", 0, "Completed", result(TRAINER_METRICS, ADAPTER), finished)],
    )
    decision = decide(ftj, observe(ftj, trainer, None), NOW)
    assert (decision.phase, decision.action) == (Phase.EXPORTING, Action.CREATE_EXPORTER)
    assert decision.trained[0] == "True"


def test_a_failed_job_wins_over_a_pod_that_exited_zero() -> None:
    ftj = tiny()
    trainer: Child = (
        job("trainer", failed=1, conditions=(cond("Failed", "DeadlineExceeded", "deadline"),)),
        [pod("trainer", "tiny-train-a", 0, "Completed", "", ago(1))],
    )
    assert decide(ftj, observe(ftj, trainer, None), NOW).phase == Phase.FAILED


def test_an_artifact_listed_by_both_jobs_appears_once() -> None:
    ftj = tiny()
    exporter: Child = (
        job("exporter", succeeded=1, completionTime=ago(1), conditions=(cond("Complete"),)),
        [pod("exporter", "tiny-export-a", 0, "Completed", result({}, ADAPTER), ago(1))],
    )
    decision = decide(ftj, observe(ftj, T_COMPLETE, exporter), NOW)
    assert decision.phase == Phase.SUCCEEDED
    assert [a.kind for a in decision.artifacts].count("adapter") == 1

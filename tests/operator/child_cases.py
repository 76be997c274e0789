"""Observed children for the policy and status tests, and the table-case shape they share.

Observations are built the way the operator builds them, with observation.observe() over small Job
and Pod dicts shaped like what the API server returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from operator_cases import GENERATION, Edit, set_, tiny

from kubetune_api import FineTuneJob, Phase, RunLayout
from kubetune_operator.builders import names
from kubetune_operator.observation import JOB_NAME_LABEL, Children, Observed, observe
from kubetune_operator.policies import new_run
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, Decision
from kubetune_operator.status import new_status

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
STARTED = "2025-03-01T11:50:00Z"  # within the example's 30-minute deadline at NOW
OLD = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
STALE_RUN = "000000000000"
SHA = "ab" * 32

Obj = dict[str, Any]


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def cond(type_: str, reason: str = "", message: str = "") -> Obj:
    return {"type": type_, "status": "True", "reason": reason, "message": message}


def job_name(component: str) -> str:
    return f"tiny-{'train' if component == names.TRAINER else 'export'}"


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
    return {
        "metadata": {"name": job_name(component), "labels": labels},
        "spec": {"suspend": suspend},
        "status": {**status, "conditions": list(conditions)},
    }


def pod(
    component: str,
    name: str,
    exit_code: int | None,
    reason: str = "",
    message: str = "",
    at: str = "",
    disruption: str | None = None,
) -> Obj:
    """A child pod; exit_code None: its container is still running. `disruption`: the reason of a
    DisruptionTarget condition (preemption, eviction)."""
    state: Obj = {"running": {"startedAt": STARTED}}
    if exit_code is not None:
        state = {
            "terminated": {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": at}
        }
    status: Obj = {"containerStatuses": [{"name": component, "state": state}]}
    if disruption is not None:
        status["conditions"] = [cond("DisruptionTarget", disruption, "preempted")]
    labels = {names.COMPONENT_LABEL: component, JOB_NAME_LABEL: job_name(component)}
    return {"metadata": {"name": name, "labels": labels}, "status": status}


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
BACKOFF_LIMIT = cond("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
T_DATA_ERROR = (
    job("trainer", failed=1, startTime=STARTED, conditions=(BACKOFF_LIMIT,)),
    [pod("trainer", "tiny-train-a", 3, "Error", "row 7: missing field 'tone'", ago(30))],
)
T_OOM = (
    job("trainer", failed=3, startTime=STARTED, conditions=(BACKOFF_LIMIT,)),
    [pod("trainer", f"tiny-train-{i}", 137, "OOMKilled", "", ago(300 - i)) for i in range(3)],
)
DEADLINE = cond("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
T_DEADLINE: Child = (job("trainer", startTime=STARTED, conditions=(DEADLINE,)), [])
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
    [pod("exporter", "tiny-export-a", 6, "Error", "the ONNX model builder failed (exit 1)\n", ago(10))],
)
GATE_MESSAGE = (
    "QUALITY_GATE: quality gate failed (int4-cpu: exactMatch 0.833 < 0.9); nothing was promoted, the "
    "export is under s3://kubetune-dev/runs/tiny/rejected/\n"
)
E_GATE_FAILED = (
    job(
        "exporter", failed=1, conditions=(cond("Failed", "PodFailurePolicy", "exit code 9 matched FailJob"),)
    ),
    [pod("exporter", "tiny-export-a", 9, "Error", GATE_MESSAGE, ago(10))],
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


def observed(ftj: FineTuneJob, trainer: Child | None, exporter: Child | None) -> Observed:
    """Children of the current run unless a case labels them with another run id."""
    jobs, pods = [], []
    for child in (trainer, exporter):
        if child is None:
            continue
        if names.RUN_ID_LABEL not in child[0]["metadata"]["labels"]:
            child = with_run(child, ftj.spec_hash())
        jobs.append(child[0])
        pods += child[1]
    return observe(ftj, Children(jobs=jobs, pods=pods))


def checkpoint_of(ftj: FineTuneJob, step: int) -> Obj:
    """status.lastCheckpoint as the trainer of the current run reports it."""
    layout = RunLayout.of(
        ftj.spec.output.uri, str(ftj.metadata.namespace), str(ftj.metadata.name), ftj.spec_hash()
    )
    return {"step": step, "uri": f"{layout.checkpoints}/checkpoint-{step}"}


# --- one table shape for every policy: decide() and the status that follows -------------------------

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
    clears_trainer_fields: bool = False


def ftj_for(case: Case) -> FineTuneJob:
    return tiny(*case.edits, set_("status", case.old_status))


def decide_case(case: Case) -> tuple[FineTuneJob, Decision]:
    ftj = ftj_for(case)
    return ftj, decide(ftj, observed(ftj, case.trainer, case.exporter), NOW)


def check_decision(case: Case) -> None:
    _, decision = decide_case(case)
    assert (decision.phase, decision.action) == (case.phase, case.action)
    if case.reason is not None:
        assert decision.reason == case.reason
    for text in case.says:
        assert text in decision.message
    for text in case.never_says:
        assert text not in decision.message
    assert (decision.trained.status.value, decision.exported.status.value) == (case.trained, case.exported)
    assert decision.metrics == case.metrics
    assert tuple(a.kind.value for a in decision.artifacts) == case.artifacts


def check_status(case: Case) -> None:
    """The status new_status() derives from the case's decision."""
    ftj, decision = decide_case(case)
    new = new_status(ftj, decision, NOW)
    status = new.operator_fields()
    conditions = {c["type"]: c for c in status["conditions"]}
    assert list(conditions)[:5] == ["Ready", "Reconciling", "Stalled", "Trained", "Exported"]
    # The optional ones are present only while a run is unfinished (tests/operator/test_policy_queue.py).
    assert set(list(conditions)[5:]) <= ({"PodsReady"} if not decision.finished else set())
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
    assert (status["completionTime"] is not None) is decision.finished
    assert "progress" not in status and "lastCheckpoint" not in status  # the trainer's fields
    clears = new_run.clear_trainer_fields(ftj, decision)
    assert clears is case.clears_trainer_fields
    kept = (ftj.status.progress, ftj.status.last_checkpoint)
    assert (new.progress, new.last_checkpoint) == ((None, None) if clears else kept)

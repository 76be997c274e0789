"""policies/failure.py: why a child pod stopped (exit code, OOM kill, disruption), whether it counts
against backoffLimit, and the message a person reads."""

from __future__ import annotations

import pytest
from child_cases import (
    BACKOFF_LIMIT,
    DEADLINE,
    E_FAILED,
    E_GATE_FAILED,
    NOW,
    STARTED,
    T_COMPLETE,
    T_DATA_ERROR,
    T_DEADLINE,
    T_OOM,
    T_RETRYING,
    TRAINER_METRICS,
    Case,
    Child,
    F,
    T,
    ago,
    check_decision,
    check_status,
    cond,
    job,
    observed,
    pod,
)
from operator_cases import tiny

from kubetune_api import Phase
from kubetune_api.exit_codes import ExitCode
from kubetune_operator.builders import jobs
from kubetune_operator.observation import ContainerOutcome
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.failure import FailureKind, classify, describe

PREEMPTION = "PreemptionByScheduler"
T_PREEMPTED: Child = (
    job("trainer", active=1, startTime=STARTED),
    [pod("trainer", "tiny-train-a", ExitCode.PREEMPTED, "Error", "checkpoint-40 saved", ago(5))],
)
T_DISRUPTED: Child = (
    job("trainer", active=1, startTime=STARTED),
    [pod("trainer", "tiny-train-a", 143, "Error", "", ago(5), disruption=PREEMPTION)],
)
T_DEADLINE_WITH_POD: Child = (
    job("trainer", startTime=STARTED, conditions=(DEADLINE,)),
    [pod("trainer", "tiny-train-a", 143, "Error", "", ago(5))],
)
# Failed on a data error, then the replacement pod was evicted: the data error is the cause.
T_DATA_ERROR_THEN_EVICTED: Child = (
    job("trainer", failed=1, startTime=STARTED, conditions=(BACKOFF_LIMIT,)),
    [
        pod("trainer", "tiny-train-a", 3, "Error", "row 7: missing field 'tone'", ago(30)),
        pod("trainer", "tiny-train-b", 143, "Error", "", ago(5), disruption="EvictionByEvictionAPI"),
    ],
)

CASES = [
    Case(
        "retrying-after-a-failure",
        *(T_RETRYING, None),
        Phase.PENDING,
        says=("1 failed attempt", "exit code 1 (unexpected error): RuntimeError: boom"),
    ),
    Case(
        "replacing-a-preempted-pod",
        *(T_PREEMPTED, None),
        Phase.PENDING,
        reason="Scheduling",
        says=("replacing the trainer pod tiny-train-a", "exit code 7", "not counted"),
    ),
    Case(
        "replacing-a-disrupted-pod",
        *(T_DISRUPTED, None),
        Phase.PENDING,
        reason="Scheduling",
        says=("replacing the trainer pod tiny-train-a", PREEMPTION, "not counted"),
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
        "trainer-failed-on-the-counted-failure-not-the-eviction",
        *(T_DATA_ERROR_THEN_EVICTED, None),
        Phase.FAILED,
        reason="TrainingFailed",
        says=("exit code 3 (dataset error): row 7",),
        never_says=("EvictionByEvictionAPI",),
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
        # The deadline, not the SIGTERM it caused, is the cause.
        "trainer-deadline-stops-a-pod",
        *(T_DEADLINE_WITH_POD, None),
        Phase.FAILED,
        reason="TrainingFailed",
        says=("DeadlineExceeded", "last pod: exit code 143 (terminated (SIGTERM))"),
        trained=F,
        kstatus=(F, F, T),
    ),
    Case(
        "exporter-failed",
        *(T_COMPLETE, E_FAILED),
        Phase.FAILED,
        reason="ExportFailed",
        says=("export failed", "exit code 6 (export error)", "the ONNX model builder failed"),
        never_says=("PodFailurePolicy",),
        trained=T,
        exported=F,
        kstatus=(F, F, T),
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
    Case(
        # Its own reason, with the figure that missed and where the rejected files are.
        "exporter-missed-its-quality-gate",
        *(T_COMPLETE, E_GATE_FAILED),
        Phase.FAILED,
        reason="QualityGateFailed",
        says=("exit code 9 (quality gate failed", "int4-cpu: exactMatch 0.833 < 0.9", "rejected/"),
        never_says=("PodFailurePolicy",),
        trained=T,
        exported=F,
        kstatus=(F, F, T),
        metrics=TRAINER_METRICS,
        artifacts=("adapter",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    check_decision(case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_status(case: Case) -> None:
    check_status(case)


def outcome(
    exit_code: int, reason: str = "Error", message: str = "", disruption: str = ""
) -> ContainerOutcome:
    return ContainerOutcome("tiny-train-a", exit_code, reason, message, disruption=disruption)


@pytest.mark.parametrize(
    ("case", "kind", "counted", "text"),
    [
        (
            outcome(1, message="Traceback\nRuntimeError: boom\n"),
            FailureKind.RETRIABLE,
            True,
            "exit code 1 (unexpected error): RuntimeError: boom",
        ),
        (outcome(2), FailureKind.PERMANENT, True, "exit code 2 (invalid configuration)"),
        (
            outcome(3, message="row 7: bad"),
            FailureKind.PERMANENT,
            True,
            "exit code 3 (dataset error): row 7: bad",
        ),
        (outcome(4), FailureKind.PERMANENT, True, "exit code 4 (storage or credentials error)"),
        (outcome(5), FailureKind.PERMANENT, True, "exit code 5 (model error)"),
        (outcome(6), FailureKind.PERMANENT, True, "exit code 6 (export error)"),
        (
            outcome(7),
            FailureKind.PREEMPTED,
            False,
            "exit code 7 (stopped on SIGTERM after a checkpoint; resuming)",
        ),
        (outcome(137, "OOMKilled"), FailureKind.OOM_KILLED, True, "OOM-killed"),
        (outcome(137), FailureKind.RETRIABLE, True, "exit code 137 (killed (SIGKILL))"),
        (outcome(143), FailureKind.RETRIABLE, True, "exit code 143 (terminated (SIGTERM))"),
        (outcome(42), FailureKind.RETRIABLE, True, "exit code 42"),
        (
            outcome(143, disruption=PREEMPTION),
            FailureKind.DISRUPTED,
            False,
            f"exit code 143 (terminated (SIGTERM)), pod disrupted ({PREEMPTION})",
        ),
        # As in the podFailurePolicy, the disruption rule comes first: a permanent code is ignored too.
        (
            outcome(3, disruption="DeletionByTaintManager"),
            FailureKind.DISRUPTED,
            False,
            "exit code 3 (dataset error), pod disrupted (DeletionByTaintManager)",
        ),
    ],
    ids=[
        "unexpected",
        "config",
        "data",
        "storage",
        "model",
        "export",
        "preempted",
        "oom",
        "sigkill",
        "sigterm",
        "unknown-code",
        "disrupted",
        "disrupted-permanent",
    ],
)
def test_classify_and_describe(case: ContainerOutcome, kind: FailureKind, counted: bool, text: str) -> None:
    assert classify(case) == kind
    assert kind.counted is counted
    assert describe(case) == text


def test_permanent_failures_are_what_the_pod_failure_policy_fails_at_once() -> None:
    permanent = {code for code in range(256) if classify(outcome(code)) == FailureKind.PERMANENT}
    assert permanent == set(jobs.PERMANENT_EXIT_CODES)
    assert classify(outcome(jobs.PREEMPTED_EXIT_CODE)) == FailureKind.PREEMPTED


def test_pods_of_other_containers_are_ignored() -> None:
    ftj = tiny()
    sidecar = pod("trainer", "tiny-train-a", 3, "Error", "row 1: bad", ago(5))
    sidecar["status"]["containerStatuses"][0]["name"] = "istio-proxy"
    failed = job("trainer", failed=1, conditions=(cond("Failed", "BackoffLimitExceeded", "limit"),))
    decision = decide(ftj, observed(ftj, (failed, [sidecar]), None), NOW)
    assert "row 1" not in decision.message
    assert "BackoffLimitExceeded" in decision.message


def test_a_failed_job_wins_over_a_pod_that_exited_zero() -> None:
    ftj = tiny()
    trainer: Child = (
        job("trainer", failed=1, conditions=(cond("Failed", "DeadlineExceeded", "deadline"),)),
        [pod("trainer", "tiny-train-a", 0, "Completed", "", ago(1))],
    )
    assert decide(ftj, observed(ftj, trainer, None), NOW).phase == Phase.FAILED

"""policies/deadline.py and live_edits.py: activeDeadlineSeconds bounds the whole run; edits of the
deadline and of backoffLimit reach a running Job, and a JobSet says why it keeps its limit. Also the
multi-node run on a cluster without JobSet, and a JobSet observed as one child."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from child_cases import NOW, STARTED, T_COMPLETE, T_RUNNING, cond, job, with_run
from operator_cases import set_, tiny

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.builders import names
from kubetune_operator.observation import Children, Observed, child_jobset, observe
from kubetune_operator.policies import deadline, live_edits
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, parse_time
from kubetune_operator.status import new_status

START = parse_time(STARTED)  # ten minutes before NOW


def running(ftj: FineTuneJob, **spec: Any) -> Observed:
    trainer_job, pods = with_run(T_RUNNING, ftj.spec_hash())
    trainer_job = {**trainer_job, "spec": {**trainer_job["spec"], **spec}}
    return observe(ftj, Children(jobs=[trainer_job], pods=pods))


def test_remaining_time_counts_from_the_first_start() -> None:
    ftj = tiny(set_("spec.activeDeadlineSeconds", 1800))
    assert deadline.remaining_seconds(ftj, None, NOW) == 1800
    assert deadline.remaining_seconds(ftj, START, NOW) == 1200
    assert deadline.remaining_seconds(ftj, START, NOW + timedelta(hours=1)) == 1  # the API's minimum
    assert deadline.remaining_seconds(tiny(set_("spec.activeDeadlineSeconds", None)), START, NOW) is None


def test_a_run_past_its_deadline_fails_and_stops_its_unfinished_child() -> None:
    ftj = tiny(set_("spec.activeDeadlineSeconds", 300), set_("status.startTime", STARTED))
    decision = decide(ftj, running(ftj), NOW)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.FAILED,
        "DeadlineExceeded",
        Action.STOP_UNFINISHED,
    )
    assert decision.trained.reason == "DeadlineExceeded"
    within = tiny(set_("spec.activeDeadlineSeconds", 3600), set_("status.startTime", STARTED))
    assert decide(within, running(within), NOW).phase == Phase.TRAINING


def test_the_deadline_also_bounds_the_export() -> None:
    ftj = tiny(set_("spec.activeDeadlineSeconds", 300), set_("status.startTime", STARTED))
    trainer_job, pods = with_run(T_COMPLETE, ftj.spec_hash())
    exporter = with_run((job("exporter", active=1, ready=1, startTime=STARTED), []), ftj.spec_hash())[0]
    decision = decide(ftj, observe(ftj, Children(jobs=[trainer_job, exporter], pods=pods)), NOW)
    assert (decision.phase, decision.reason) == (Phase.FAILED, "DeadlineExceeded")
    assert decision.trained.status == ConditionStatus.TRUE and decision.exported.reason == "DeadlineExceeded"


def test_a_finished_run_is_never_failed_by_the_deadline() -> None:
    ftj = tiny(
        set_("spec.activeDeadlineSeconds", 1),
        set_("spec.export.enabled", False),
        set_("status.startTime", STARTED),
    )
    trainer_job, pods = with_run(T_COMPLETE, ftj.spec_hash())
    assert decide(ftj, observe(ftj, Children(jobs=[trainer_job], pods=pods)), NOW).phase == Phase.SUCCEEDED


def test_edits_of_the_limits_reach_the_running_job() -> None:
    ftj = tiny(set_("spec.backoffLimit", 5), set_("spec.activeDeadlineSeconds", 7200))
    patches = live_edits.job_patches(ftj, running(ftj, backoffLimit=2, activeDeadlineSeconds=1800), START)
    # The Job started at the run's start, so its own deadline is the run's.
    assert patches == [("tiny-train", {"spec": {"backoffLimit": 5, "activeDeadlineSeconds": 7200}})]
    same = live_edits.job_patches(ftj, running(ftj, backoffLimit=5, activeDeadlineSeconds=7200), START)
    assert same == []
    unbounded = tiny(set_("spec.activeDeadlineSeconds", None))
    cleared = live_edits.job_patches(
        unbounded, running(unbounded, backoffLimit=2, activeDeadlineSeconds=60), START
    )
    assert cleared == [("tiny-train", {"spec": {"activeDeadlineSeconds": None}})]


def test_a_job_restarted_later_gets_what_is_left_of_the_run() -> None:
    ftj = tiny(set_("spec.activeDeadlineSeconds", 1800))
    trainer_job, pods = with_run(T_RUNNING, ftj.spec_hash())
    trainer_job = {
        **trainer_job,
        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 1800},
        "status": {**trainer_job["status"], "startTime": "2025-03-01T11:55:00Z"},  # resumed 5 minutes in
    }
    observed = observe(ftj, Children(jobs=[trainer_job], pods=pods))
    assert live_edits.job_patches(ftj, observed, START) == [
        ("tiny-train", {"spec": {"activeDeadlineSeconds": 1500}})
    ]


# --- multi-node: JobSet ---------------------------------------------------------------------------

MULTI = (set_("spec.resources.nodes", 2), set_("spec.resources.gpusPerNode", 1))


def jobset(ftj: FineTuneJob, *, restarts: int = 0, max_restarts: int = 2, **status: Any) -> dict[str, Any]:
    labels = {names.FINETUNEJOB_LABEL: "tiny", names.RUN_ID_LABEL: ftj.spec_hash()}
    return {
        "metadata": {"name": "tiny-train", "labels": labels},
        "spec": {
            "suspend": False,
            "failurePolicy": {"maxRestarts": max_restarts},
            "replicatedJobs": [{"name": "trainer", "replicas": 1, "template": {"spec": {"completions": 2}}}],
        },
        "status": {"restarts": restarts, **status},
    }


def group_pod(index: int, attempt: int, exit_code: int | None) -> dict[str, Any]:
    state = (
        {"running": {}} if exit_code is None else {"terminated": {"exitCode": exit_code, "reason": "Error"}}
    )
    return {
        "metadata": {
            "name": f"tiny-train-trainer-0-{index}-x{attempt}",
            "labels": {
                names.COMPONENT_LABEL: names.TRAINER,
                names.JOBSET_NAME_LABEL: "tiny-train",
                names.JOBSET_RESTART_LABEL: str(attempt),
                "job-name": "tiny-train-trainer-0",
            },
        },
        "status": {
            "phase": "Running" if exit_code is None else "Failed",
            "startTime": STARTED,
            "containerStatuses": [{"name": "trainer", "state": state}],
        },
    }


def test_a_jobset_is_one_child_and_only_its_current_attempt_counts() -> None:
    ftj = tiny(*MULTI)
    pods = [group_pod(0, 0, 137), group_pod(1, 0, 1), group_pod(0, 1, None), group_pod(1, 1, None)]
    child = child_jobset(
        jobset(ftj, restarts=1, replicatedJobsStatus=[{"name": "trainer", "ready": 1}]), pods
    )
    assert (child.kind, child.restarts, child.completions, child.active, child.ready) == (
        "JobSet",
        1,
        2,
        2,
        1,
    )
    assert child.outcomes == ()  # the SIGKILLed attempt is history
    observed = observe(ftj, Children(jobsets=[jobset(ftj)], pods=pods))
    assert observed.trainer is not None and observed.trainer.kind == "JobSet"
    assert decide(ftj, observed, NOW).phase in (Phase.PENDING, Phase.TRAINING)


def test_a_failed_jobset_fails_the_run_with_its_reason() -> None:
    ftj = tiny(*MULTI)
    failed = jobset(
        ftj,
        restarts=2,
        conditions=[{**cond("Failed", "ReachedMaxRestarts", "jobset failed"), "lastTransitionTime": STARTED}],
    )
    decision = decide(ftj, observe(ftj, Children(jobsets=[failed])), NOW)
    assert decision.phase == Phase.FAILED


def test_a_jobset_keeps_its_restart_limit_and_says_so() -> None:
    ftj = tiny(*MULTI, set_("spec.backoffLimit", 5))
    observed = observe(ftj, Children(jobsets=[jobset(ftj, max_restarts=2)]))
    condition = live_edits.backoff_limit_condition(ftj, observed)
    assert condition is not None and condition.status == ConditionStatus.FALSE
    assert "maxRestarts 2" in condition.message
    assert live_edits.job_patches(ftj, observed, START) == []  # nothing to patch on a JobSet


def test_multi_node_without_the_jobset_api_fails_at_once() -> None:
    ftj = tiny(*MULTI)
    decision = decide(ftj, Observed(jobset_available=False), NOW)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.FAILED,
        "JobSetNotInstalled",
        Action.NONE,
    )
    assert "jobset.x-k8s.io" in decision.message
    single = tiny()
    assert decide(single, Observed(jobset_available=False), NOW).action == Action.CREATE_TRAINER


def test_a_run_failed_for_want_of_jobset_stays_failed_once_jobset_appears() -> None:
    ftj = tiny(*MULTI)
    failed = decide(ftj, Observed(jobset_available=False), NOW)
    status = new_status(ftj, failed, NOW).model_dump(mode="json", by_alias=True, exclude_none=True)
    later = tiny(*MULTI, set_("status", status))
    assert decide(later, Observed(jobset_available=True), NOW).phase == Phase.FAILED

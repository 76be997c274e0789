"""Dry runs (spec.dryRun): the plan Job instead of the trainer, the phase and the Planned condition from
its result document, warnings as Events, and the plan Job's shape (no GPU, small CPU and memory)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from builder_cases import GPU_DRY_RUN, SETTINGS, gpu_dry_run
from child_cases import NOW, ago, cond
from operator_cases import serialize, set_, tiny

from kubetune_api import ConditionStatus, ConditionType, FineTuneJob, Phase
from kubetune_operator.builders import jobs, names
from kubetune_operator.observation import JOB_NAME_LABEL, Children, observe
from kubetune_operator.policies import dry_run
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action
from kubetune_operator.services.reconcile import Reconciler
from kubetune_operator.status import new_status

DRY = set_("spec.dryRun", True)
WARNING = {"reason": "SomeRowsTruncated", "message": "2 of 40 rows are cut", "severity": "Warning"}
ERROR = {"reason": "MissingField", "message": "dataset.textTemplate names field 'x'", "severity": "Error"}
ERROR2 = {"reason": "AllRowsTruncated", "message": "every measured row is longer", "severity": "Error"}


def plan_doc(*problems: dict[str, Any]) -> str:
    return json.dumps({"plan": {"format": "text", "rows": 40, "totalSteps": 5, "problems": list(problems)}})


def plan_child(ftj: FineTuneJob, *, done: bool = False, failed: bool = False, message: str = "") -> Children:
    name = names.plan_job_name(ftj)
    labels = {names.FINETUNEJOB_LABEL: "tiny", names.RUN_ID_LABEL: ftj.spec_hash()}
    conditions = []
    if done:
        conditions = [cond("Complete")]
    if failed:
        conditions = [cond("Failed", "PodFailurePolicy", "exit code 3")]
    job = {
        "metadata": {"name": name, "labels": {**labels, names.COMPONENT_LABEL: names.PLANNER}},
        "spec": {},
        "status": {
            "conditions": conditions,
            "active": 0 if (done or failed) else 1,
            "ready": 0 if (done or failed) else 1,
            "startTime": ago(60),
            **({"completionTime": ago(5)} if done else {}),
        },
    }
    pods = []
    if done or failed:
        state = {"terminated": {"exitCode": 0 if done else 3, "reason": "Completed" if done else "Error"}}
        state["terminated"].update(message=message, finishedAt=ago(5))
        pods.append(
            {
                "metadata": {
                    "name": f"{name}-x",
                    "labels": {names.COMPONENT_LABEL: names.PLANNER, JOB_NAME_LABEL: name},
                },
                "status": {"containerStatuses": [{"name": names.PLANNER, "state": state}]},
            }
        )
    return Children(jobs=[job], pods=pods)


@pytest.mark.parametrize(
    ("child", "phase", "action", "planned", "reason"),
    [
        ("none", Phase.PENDING, Action.CREATE_PLANNER, ConditionStatus.UNKNOWN, "Creating"),
        ("running", Phase.PENDING, Action.NONE, ConditionStatus.UNKNOWN, "Planning"),
        ("clean", Phase.SUCCEEDED, Action.NONE, ConditionStatus.TRUE, "PlanReady"),
        ("warning", Phase.SUCCEEDED, Action.NONE, ConditionStatus.TRUE, "PlanReady"),
        ("errors", Phase.FAILED, Action.NONE, ConditionStatus.FALSE, "MissingField"),
        ("no-document", Phase.FAILED, Action.NONE, ConditionStatus.FALSE, "PlanUnreadable"),
        ("pod-failed", Phase.FAILED, Action.NONE, ConditionStatus.FALSE, "PlanFailed"),
    ],
)
def test_dry_run_phase_and_planned_condition(
    child: str, phase: Phase, action: Action, planned: ConditionStatus, reason: str
) -> None:
    ftj = tiny(DRY)
    raw = {
        "none": Children(),
        "running": plan_child(ftj),
        "clean": plan_child(ftj, done=True, message=plan_doc()),
        "warning": plan_child(ftj, done=True, message=plan_doc(WARNING)),
        "errors": plan_child(ftj, done=True, message=plan_doc(WARNING, ERROR, ERROR2)),
        "no-document": plan_child(ftj, done=True, message="not json"),
        "pod-failed": plan_child(ftj, failed=True, message="DATA: cannot read dataset"),
    }[child]
    decision = decide(ftj, observe(ftj, raw), NOW)
    assert (decision.phase, decision.action, decision.reason) == (phase, action, reason)
    # Nothing is trained or exported, whatever the plan found.
    assert decision.trained.reason == decision.exported.reason == "DryRun"
    status = new_status(ftj, decision, NOW)
    found = status.condition(ConditionType.PLANNED.value)
    assert found is not None and (found.status, found.reason) == (
        planned,
        decision.planned and decision.planned.reason,
    )
    assert status.trainer_job_name is None and status.export_job_name is None
    if child == "errors":
        # The first error's reason, every error's message; the warning is not in it.
        assert found.message == f"{ERROR['message']}; {ERROR2['message']}"
        assert status.plan is not None and [p.reason for p in status.plan.errors] == [
            "MissingField",
            "AllRowsTruncated",
        ]
    if child in ("clean", "warning"):
        assert status.plan is not None and status.plan.total_steps == 5
        assert status.completion_time is not None


def test_warnings_become_warning_events_once() -> None:
    ftj = tiny(DRY)
    decision = decide(ftj, observe(ftj, plan_child(ftj, done=True, message=plan_doc(WARNING))), NOW)
    assert dry_run.new_warnings(ftj, decision) == [(WARNING["reason"], WARNING["message"])]
    recorded = ftj.model_copy(update={"status": new_status(ftj, decision, NOW)})
    assert dry_run.new_warnings(recorded, decision) == []


def test_reconcile_posts_a_warning_event_per_plan_warning() -> None:
    ftj = tiny(DRY)

    class Writer:
        def write(self, *args: Any, **kwargs: Any) -> bool:
            return True

    class Kids:  # a finished run only gets its Jobs' TTL patched
        settings = SETTINGS

        def patch_child(self, *args: Any) -> None:
            pass

    reconciler = Reconciler(children=Kids(), status=Writer(), clock=lambda: NOW)  # type: ignore[arg-type]
    result = reconciler.reconcile(ftj, observe(ftj, plan_child(ftj, done=True, message=plan_doc(WARNING))))
    warnings = [(e.type, e.reason) for e in result.events]
    assert ("Warning", "SomeRowsTruncated") in warnings
    assert ("Normal", "Succeeded") in warnings


def test_a_real_run_of_the_same_job_replaces_the_plan_job() -> None:
    """dryRun is part of the run id: after dryRun false the plan Job is stale and deleted, and the
    status of the new run carries no plan."""
    dry = tiny(DRY)
    real = tiny(set_("spec.dryRun", False))
    assert dry.spec_hash() != real.spec_hash()
    plan_of_dry = plan_child(dry, done=True, message=plan_doc())
    decision = decide(real, observe(real, plan_of_dry), NOW)
    assert decision.action == Action.DELETE_STALE
    recorded = real.model_copy(
        update={"status": new_status(dry, decide(dry, observe(dry, plan_of_dry), NOW), NOW)}
    )
    assert recorded.status.plan is not None
    assert new_status(recorded, decision, NOW).plan is None
    assert decide(real, observe(real, Children()), NOW).action == Action.CREATE_TRAINER


def test_plan_job_binds_no_gpu_and_keeps_the_trainers_identity() -> None:
    ftj = gpu_dry_run(tiny())
    assert ftj.spec.resources.gpus_per_node == 2 and GPU_DRY_RUN
    plan = serialize(jobs.plan_job(ftj, SETTINGS))
    trainer = serialize(jobs.trainer_job(ftj, SETTINGS))
    pod, trainer_pod = plan["spec"]["template"]["spec"], trainer["spec"]["template"]["spec"]
    container, trainer_container = pod["containers"][0], trainer_pod["containers"][0]
    assert jobs.GPU_RESOURCE not in container["resources"]["limits"]
    assert container["resources"]["limits"]["cpu"] == jobs.PLAN_CPU
    assert container["resources"]["requests"]["memory"] == jobs.PLAN_MEMORY
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["securityContext"] == trainer_pod["securityContext"]
    assert container["securityContext"] == trainer_container["securityContext"]
    assert container["env"] == trainer_container["env"]  # the S3 endpoint and credentials
    assert container["command"][:3] == ["python", "-m", "kubetune_trainer.plan"]
    assert plan["metadata"]["name"] == "tiny-plan"
    assert not plan["spec"].get("suspend")

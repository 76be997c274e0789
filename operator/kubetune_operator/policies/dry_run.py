"""Dry run (spec.dryRun): one CPU-only plan Job instead of the trainer, and no export.

The plan pod exits 0 whenever it could plan, problems included, and leaves the plan as its result
document ({"plan": {...}}, the termination message, as the trainer leaves its result: results.py). The
run then succeeds when the plan has no error problem, and fails with the first error's reason
otherwise; the Planned condition carries the reason and every error's message. A plan pod that could
not plan at all (unreadable data or model, no S3 access) fails its Job with the trainer's exit codes.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from kubetune_api import ConditionStatus, FineTuneJob, Phase, PlanStatus
from kubetune_operator.observation import ChildJob
from kubetune_operator.policies import failure
from kubetune_operator.policies.decision import Action, Decision, StageCondition, parse_time

PLAN_READY = "PlanReady"
PLAN_FAILED = "PlanFailed"
PLAN_UNREADABLE = "PlanUnreadable"
PLANNING = "Planning"
DRY_RUN = StageCondition(
    ConditionStatus.FALSE, "DryRun", "spec.dryRun is true: nothing is trained or exported"
)


def decide(ftj: FineTuneJob, planner: ChildJob | None) -> Decision:
    stages: dict[str, Any] = {"trained": DRY_RUN, "exported": DRY_RUN}
    if planner is None:
        planning = StageCondition(ConditionStatus.UNKNOWN, PLANNING, "creating the plan Job")
        return Decision(
            Phase.PENDING,
            "Creating",
            "creating the plan Job",
            Action.CREATE_PLANNER,
            planned=planning,
            **stages,
        )
    if planner.failed_reason:
        message = failure.failure_message("plan", planner)
        failed = StageCondition(ConditionStatus.FALSE, PLAN_FAILED, message)
        return Decision(
            Phase.FAILED,
            PLAN_FAILED,
            message,
            planned=failed,
            completion_time=parse_time(planner.completion_time),
            **stages,
        )
    if not planner.done:
        problem = planner.problem
        if problem is not None:
            message = f"the plan pod of Job {planner.name} cannot run ({problem.reason}): {problem.message}"
            waiting = StageCondition(ConditionStatus.UNKNOWN, problem.reason, message)
            pods = StageCondition(ConditionStatus.FALSE, problem.reason, problem.message)
            return Decision(
                Phase.PENDING, problem.reason, message, planned=waiting, pods_ready=pods, **stages
            )
        message = (
            f"plan Job {planner.name} is running" if planner.ready else f"waiting for plan Job {planner.name}"
        )
        running = StageCondition(ConditionStatus.UNKNOWN, PLANNING, message)
        return Decision(Phase.PENDING, PLANNING, message, planned=running, **stages)
    finished = parse_time(planner.completion_time)
    plan = read_plan(planner)
    if plan is None:
        message = f"plan Job {planner.name} succeeded but left no readable plan in its termination message"
        unreadable = StageCondition(ConditionStatus.FALSE, PLAN_UNREADABLE, message)
        return Decision(
            Phase.FAILED, PLAN_UNREADABLE, message, planned=unreadable, completion_time=finished, **stages
        )
    planned = planned_condition(plan)
    phase = Phase.SUCCEEDED if planned.status == ConditionStatus.TRUE else Phase.FAILED
    return Decision(
        phase,
        planned.reason,
        planned.message,
        planned=planned,
        plan=plan,
        completion_time=finished,
        **stages,
    )


def read_plan(planner: ChildJob) -> PlanStatus | None:
    """The plan of the plan pod's result document; None when there is none, or it does not parse."""
    outcome = planner.result_outcome()
    document = outcome.result() if outcome else {}
    raw = document.get("plan")
    if not isinstance(raw, dict):
        return None
    try:
        return PlanStatus.model_validate(raw)
    except ValidationError:
        return None


def planned_condition(plan: PlanStatus) -> StageCondition:
    """True (PlanReady) without errors; False with the first error's reason and every error's message."""
    errors = plan.errors
    if errors:
        return StageCondition(ConditionStatus.FALSE, errors[0].reason, "; ".join(e.message for e in errors))
    warned = f" ({len(plan.warnings)} warning(s): see status.plan.problems)" if plan.warnings else ""
    return StageCondition(ConditionStatus.TRUE, PLAN_READY, f"dry run planned: nothing was trained{warned}")


def new_warnings(ftj: FineTuneJob, decision: Decision) -> list[tuple[str, str]]:
    """(reason, message) of each warning of a plan the status does not hold yet: one Event each."""
    if decision.plan is None:
        return []
    old = ftj.status.plan
    if old is not None and ftj.status.run_id == ftj.spec_hash():
        return []
    return [(p.reason, p.message) for p in decision.plan.warnings]

"""activeDeadlineSeconds bounds the whole run: every Job of it, restarts and export included, counted
from the first start of training (status.startTime). The operator enforces it itself, because no
single Job (nor a JobSet, which has no deadline) sees the whole run; each plain Job also carries what
is left of it, so the deadline holds while the operator is away."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.observation import ChildJob
from kubetune_operator.policies.decision import Action, Decision, StageCondition, parse_time


def run_start(ftj: FineTuneJob, trainer: ChildJob | None) -> datetime | None:
    return ftj.status.start_time or (parse_time(trainer.start_time) if trainer else None)


def remaining_seconds(ftj: FineTuneJob, start: datetime | None, now: datetime) -> int | None:
    """What is left of the deadline (at least 1 s, the API's minimum); None without a deadline."""
    deadline = ftj.spec.active_deadline_seconds
    if deadline is None:
        return None
    if start is None:
        return deadline
    return max(1, math.ceil(deadline - (now - start).total_seconds()))


def job_deadline(ftj: FineTuneJob, start: datetime | None, job: ChildJob) -> int | None:
    """A started Job's activeDeadlineSeconds (counted by Kubernetes from the Job's own startTime) that
    ends the Job when the run's deadline ends. None without a deadline or before the Job started."""
    deadline = ftj.spec.active_deadline_seconds
    job_start = parse_time(job.start_time)
    if deadline is None or job_start is None:
        return None
    offset = (job_start - start).total_seconds() if start else 0.0
    return max(1, math.ceil(deadline - max(offset, 0.0)))


def enforce(ftj: FineTuneJob, decision: Decision, start: datetime | None, now: datetime) -> Decision:
    """An unfinished run past its deadline fails, and its unfinished child is stopped."""
    deadline = ftj.spec.active_deadline_seconds
    if decision.finished or deadline is None or start is None:
        return decision
    if (now - start).total_seconds() < deadline:
        return decision
    message = f"activeDeadlineSeconds ({deadline} s) passed since training first started"
    failed = StageCondition(ConditionStatus.FALSE, "DeadlineExceeded", message)
    stage = {"trained": failed} if decision.trained.status != ConditionStatus.TRUE else {"exported": failed}
    return replace(
        decision,
        phase=Phase.FAILED,
        reason="DeadlineExceeded",
        message=message,
        action=Action.STOP_UNFINISHED,
        # Kept from the pass that failed it, so the status does not change on every pass.
        completion_time=(ftj.status.phase == Phase.FAILED and ftj.status.completion_time) or now,
        **stage,  # type: ignore[arg-type]
    )

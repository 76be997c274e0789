"""A cap on checkpointed stops. A stop that saved a checkpoint (exit 7) or that came from outside (a
preemption, an eviction, a drained node) is not the job's fault, so backoffLimit ignores it; without a
cap, a job that is preempted again and again would never end. The count is kept in the status, so it
survives the trainer Job being replaced."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_api.exit_codes import ExitCode
from kubetune_operator.observation import ChildJob
from kubetune_operator.policies.decision import Action, Decision, StageCondition, Stops

PREEMPTION_LIMIT_EXCEEDED = "PreemptionLimitExceeded"


def observe(ftj: FineTuneJob, trainer: ChildJob | None) -> Stops:
    """A JobSet says how many group restarts were not counted against maxRestarts. A Job's stopped
    pods vanish from the API soon after they exit, so its stops are its replacement pods (new names
    since the last pass) less the failures it counted; the status keeps the tally."""
    status = ftj.status
    same_run = status.run_id == ftj.spec_hash()
    remembered = (status.preemptions or 0) if same_run else 0
    known = set(status.trainer_pods or ()) if same_run else set()
    seen = (status.trainer_pods_seen or 0) if same_run else 0
    lost = max((status.lost_checkpoints or 0) if same_run else 0, _lost(trainer))
    if trainer is None:
        return Stops(remembered, lost, tuple(status.trainer_pods or ()) if same_run else (), seen)
    if trainer.kind == "JobSet":
        return Stops(max(remembered, trainer.restarts - trainer.counted_restarts), lost)
    seen += sum(1 for name in trainer.pod_names if name not in known)
    replaced = seen - 1 - trainer.failed
    return Stops(max(remembered, replaced), lost, trainer.pod_names, seen)


def _lost(trainer: ChildJob | None) -> int:
    """Stops whose checkpoint did not upload (exit 8): counted against backoffLimit, not here."""
    return sum(1 for o in trainer.outcomes if o.exit_code == ExitCode.CHECKPOINT_LOST) if trainer else 0


def enforce(ftj: FineTuneJob, decision: Decision, stops: Stops, now: datetime) -> Decision:
    """An unfinished run past its limit fails, and its unfinished child is stopped."""
    decision = replace(decision, stops=stops)
    limit = ftj.spec.preemption_limit
    if decision.finished or stops.count <= limit:
        return decision
    message = (
        f"stopped {stops.count} times after a checkpoint (preemption, eviction or suspension), more than "
        f"preemptionLimit ({limit}); raise it to resume from the last checkpoint"
    )
    failed = StageCondition(ConditionStatus.FALSE, PREEMPTION_LIMIT_EXCEEDED, message)
    stage = {"trained": failed} if decision.trained.status != ConditionStatus.TRUE else {"exported": failed}
    return replace(
        decision,
        phase=Phase.FAILED,
        reason=PREEMPTION_LIMIT_EXCEEDED,
        message=message,
        action=Action.STOP_UNFINISHED,
        # Kept from the pass that failed it, so the status does not change on every pass.
        completion_time=(ftj.status.phase == Phase.FAILED and ftj.status.completion_time) or now,
        **stage,  # type: ignore[arg-type]
    )

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
from kubetune_operator.policies.decision import Action, Decision, StageCondition

PREEMPTION_LIMIT_EXCEEDED = "PreemptionLimitExceeded"


def observed_stops(trainer: ChildJob | None) -> int:
    """Checkpointed stops the trainer child shows: a JobSet's uncounted group restarts, or the pods of a
    Job that stopped with a checkpoint or were disrupted."""
    if trainer is None:
        return 0
    if trainer.kind == "JobSet":
        return max(trainer.restarts - trainer.counted_restarts, 0)
    return sum(1 for o in trainer.outcomes if _checkpointed_stop(o.exit_code, o.disruption))


def _checkpointed_stop(exit_code: int, disruption: str) -> bool:
    """Exit 7, or a disruption, unless the checkpoint was lost (exit 8 counts against backoffLimit)."""
    if exit_code in (0, ExitCode.CHECKPOINT_LOST):
        return False
    return exit_code == ExitCode.PREEMPTED or bool(disruption)


def lost_checkpoints(ftj: FineTuneJob, trainer: ChildJob | None) -> int:
    """This run's stops whose checkpoint did not upload (exit 8), remembered like the stops."""
    remembered = ftj.status.lost_checkpoints if ftj.status.run_id == ftj.spec_hash() else None
    seen = sum(1 for o in trainer.outcomes if o.exit_code == ExitCode.CHECKPOINT_LOST) if trainer else 0
    return max(remembered or 0, seen)


def count(ftj: FineTuneJob, trainer: ChildJob | None) -> int:
    """This run's stops: what the status remembers (same run only) or what the trainer shows, if more."""
    remembered = ftj.status.preemptions if ftj.status.run_id == ftj.spec_hash() else None
    return max(remembered or 0, observed_stops(trainer))


def enforce(ftj: FineTuneJob, decision: Decision, stops: int, now: datetime, lost: int = 0) -> Decision:
    """An unfinished run past its limit fails, and its unfinished child is stopped."""
    decision = replace(decision, preemptions=stops or None, lost_checkpoints=lost or None)
    limit = ftj.spec.preemption_limit
    if decision.finished or stops <= limit:
        return decision
    message = (
        f"stopped {stops} times after a checkpoint (preemption, eviction or suspension), more than "
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

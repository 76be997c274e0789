"""The status a FineTuneJob should have: from a pass's Decision, or for a spec that cannot run.

Pure, like the policies: the operator's fields are derived from the decision and the current status;
the trainer's fields (progress, lastCheckpoint) are carried over, or cleared when they belong to
another run. services/status_writer.py turns the result into one merge patch.
"""

from __future__ import annotations

from datetime import datetime

from kubetune_api import Condition, ConditionStatus, ConditionType, FineTuneJob, FineTuneJobStatus, Phase
from kubetune_operator.builders import names
from kubetune_operator.policies import new_run
from kubetune_operator.policies.decision import Decision, StageCondition

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
# Exported reasons under which no export Job exists.
NO_EXPORT_JOB = ("Pending", "ExportDisabled", "DryRun")


def new_status(ftj: FineTuneJob, decision: Decision, now: datetime) -> FineTuneJobStatus:
    old = ftj.status
    generation = ftj.metadata.generation
    same_run = new_run.same_run(ftj, decision)
    keep_trainer_fields = not new_run.clear_trainer_fields(ftj, decision)
    phase = decision.phase

    def condition(type_: ConditionType, status: ConditionStatus, reason: str, message: str) -> Condition:
        return transition(old, generation, now, type_, StageCondition(status, reason, message))

    summary = (decision.reason, decision.message)
    return FineTuneJobStatus(
        phase=phase,
        conditions=[
            # A suspended job is as its spec asks: GitOps tools (kstatus) read it as Current, not as
            # a rollout that never ends.
            condition(ConditionType.READY, T if phase in (Phase.SUCCEEDED, Phase.SUSPENDED) else F, *summary),
            condition(
                ConditionType.RECONCILING,
                F if decision.finished or phase == Phase.SUSPENDED else T,
                *summary,
            ),
            condition(ConditionType.STALLED, T if phase == Phase.FAILED else F, *summary),
            condition(ConditionType.TRAINED, *decision.trained),
            condition(ConditionType.EXPORTED, *decision.exported),
            *(
                condition(type_, *state)
                for type_, state in (
                    (ConditionType.ADMITTED, decision.admitted),
                    (ConditionType.PODS_READY, decision.pods_ready),
                    (ConditionType.BACKOFF_LIMIT_APPLIED, decision.backoff_limit_applied),
                )
                if state is not None and not decision.finished
            ),
            *([condition(ConditionType.PLANNED, *decision.planned)] if decision.planned is not None else []),
        ],
        observed_generation=generation,
        run_id=ftj.spec_hash(),
        # The Job's startTime moves on every resume; ours means "when training first started".
        start_time=(old.start_time if same_run else None) or decision.start_time,
        preemptions=decision.stops.count or None,
        lost_checkpoints=decision.stops.lost_checkpoints or None,
        trainer_pods=list(decision.stops.trainer_pods) or None,
        trainer_pods_seen=decision.stops.trainer_pods_seen or None,
        completion_time=decision.completion_time if decision.finished else None,
        trainer_job_name=None if ftj.spec.dry_run else names.trainer_job_name(ftj),
        export_job_name=(
            names.export_job_name(ftj) if decision.exported.reason not in NO_EXPORT_JOB else None
        ),
        # Results of an earlier spec revision never show under the new run id; those of this run stay
        # when its pods are garbage-collected.
        artifacts=decision.artifacts or (old.artifacts if same_run else []),
        export_targets=decision.export_targets or (old.export_targets if same_run else []),
        metrics={**(old.metrics if same_run else {}), **decision.metrics},
        plan=decision.plan or (old.plan if same_run else None),
        message=decision.message,
        progress=old.progress if keep_trainer_fields else None,
        last_checkpoint=old.last_checkpoint if keep_trainer_fields else None,
    )


def invalid_spec_status(
    old: FineTuneJobStatus, generation: int | None, message: str, now: datetime
) -> FineTuneJobStatus:
    """Failed at once, with the reason where the user looks; no Jobs are created."""
    invalid = "InvalidSpec", message
    conditions = [
        transition(old, generation, now, ConditionType.READY, StageCondition(F, *invalid)),
        transition(old, generation, now, ConditionType.RECONCILING, StageCondition(F, *invalid)),
        transition(old, generation, now, ConditionType.STALLED, StageCondition(T, *invalid)),
    ]
    return old.model_copy(
        update={
            "phase": Phase.FAILED,
            "conditions": conditions,
            "observed_generation": generation,
            "message": message,
        }
    )


def transition(
    old: FineTuneJobStatus,
    generation: int | None,
    now: datetime,
    type_: ConditionType,
    state: StageCondition,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    previous = old.condition(type_.value)
    flipped = previous is None or previous.status != state.status
    return Condition(
        type=type_.value,
        status=state.status,
        reason=state.reason,
        message=state.message,
        last_transition_time=now if flipped or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )

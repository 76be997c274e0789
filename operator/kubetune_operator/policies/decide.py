"""One pass's decision, composed from the policies. The phase follows from the observed children
only: no trainer -> create it; held by Kueue -> Queued; trainer running -> Training; trainer succeeded
-> create the export Job; export succeeded -> Succeeded; a failed child -> Failed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kubetune_api import ConditionStatus, ConditionType, FineTuneJob, Phase
from kubetune_operator.observation import ChildJob, Observed
from kubetune_operator.policies import (
    deadline,
    dry_run,
    failure,
    live_edits,
    new_run,
    preemption,
    queue,
    results,
    suspend,
    ttl,
)
from kubetune_operator.policies.decision import Action, Decision, StageCondition, Stops, parse_time

JOBSET_NOT_INSTALLED = "JobSetNotInstalled"
EXPORT_DISABLED = StageCondition(ConditionStatus.FALSE, "ExportDisabled", "spec.export.enabled is false")


def decide(ftj: FineTuneJob, observed: Observed, now: datetime) -> Decision:
    stale = new_run.replace_stale(ftj, observed)
    if stale is not None:
        return stale
    if ttl.finished_and_cleaned_up(ftj, observed):
        return ttl.finish(ftj, _as_recorded(ftj), now)
    if ftj.spec.dry_run:
        return ttl.finish(ftj, dry_run.decide(ftj, observed.planner), now)
    trainer, exporter = observed.trainer, observed.exporter
    start = deadline.run_start(ftj, trainer)
    stops = preemption.observe(ftj, trainer)
    if trainer is None:
        if ftj.spec.resources.nodes > 1 and (not observed.jobset_available or _failed_without_jobset(ftj)):
            # Failed stays failed for this spec, even once JobSet is installed: an edit starts anew.
            return ttl.finish(ftj, _jobset_missing(ftj), now)
        decision = Decision(Phase.PENDING, "Creating", "creating the trainer", Action.CREATE_TRAINER)
        return ttl.finish(ftj, _limits(ftj, decision, start, stops, now), now)
    if trainer.done and not trainer.failed_reason:
        decision = _export(ftj, trainer, exporter)
    else:
        decision = _training(ftj, trainer)
    metrics, artifacts = results.collect(trainer, exporter)
    # Never silently: a result cut to fit the termination message says so, and where the rest is.
    notes = results.truncation_notes(trainer, exporter)
    decision = replace(
        decision,
        message="; ".join([decision.message, *notes]),
        metrics=metrics,
        artifacts=artifacts,
        export_targets=results.export_targets(exporter),
        start_time=parse_time(trainer.start_time),
        backoff_limit_applied=live_edits.backoff_limit_condition(ftj, observed),
    )
    return ttl.finish(ftj, _limits(ftj, decision, start, stops, now), now)


def _limits(
    ftj: FineTuneJob, decision: Decision, start: datetime | None, stops: Stops, now: datetime
) -> Decision:
    """The run's deadline, then its cap on checkpointed stops: each fails an unfinished run."""
    return preemption.enforce(ftj, deadline.enforce(ftj, decision, start, now), stops, now)


def _as_recorded(ftj: FineTuneJob) -> Decision:
    """The finished run as its status records it (its Jobs, pods and results are gone)."""
    status = ftj.status

    def stage(type_: ConditionType) -> StageCondition:
        found = status.condition(type_.value)
        if found is None:
            return StageCondition(ConditionStatus.UNKNOWN, "Unknown", "not recorded")
        return StageCondition(found.status, found.reason or "", found.message or "")

    ready = status.condition(ConditionType.READY.value)
    planned = stage(ConditionType.PLANNED) if status.condition(ConditionType.PLANNED.value) else None
    assert status.phase is not None  # finished_and_cleaned_up checked it
    return Decision(
        status.phase,
        (ready.reason if ready else None) or status.phase.value,
        status.message or "",
        trained=stage(ConditionType.TRAINED),
        exported=stage(ConditionType.EXPORTED),
        planned=planned,
        start_time=status.start_time,
        completion_time=status.completion_time,
        stops=preemption.observe(ftj, None),  # the tally the status keeps
    )


def _failed_without_jobset(ftj: FineTuneJob) -> bool:
    stalled = ftj.status.condition(ConditionType.STALLED.value)
    return (
        ftj.status.phase == Phase.FAILED
        and ftj.status.observed_generation == ftj.metadata.generation
        and stalled is not None
        and stalled.reason == JOBSET_NOT_INSTALLED
    )


def _jobset_missing(ftj: FineTuneJob) -> Decision:
    message = (
        f"resources.nodes is {ftj.spec.resources.nodes}: a multi-node run needs the JobSet API "
        "(jobset.x-k8s.io/v1alpha2), which this cluster does not serve; install JobSet, or use nodes: 1"
    )
    failed = StageCondition(ConditionStatus.FALSE, JOBSET_NOT_INSTALLED, message)
    return Decision(Phase.FAILED, JOBSET_NOT_INSTALLED, message, trained=failed)


def _training(ftj: FineTuneJob, trainer: ChildJob) -> Decision:
    """The trainer exists and has not succeeded."""
    if trainer.failed_reason:
        message = failure.failure_message("trainer", trainer)
        failed = StageCondition(ConditionStatus.FALSE, "TrainingFailed", message)
        return Decision(
            Phase.FAILED,
            "TrainingFailed",
            message,
            trained=failed,
            completion_time=parse_time(trainer.completion_time),
        )
    suspended = suspend.training_suspended(ftj)
    if suspended is not None:
        return replace(suspended, admitted=queue.admitted_condition(ftj, trainer))
    checkpoint = new_run.resume_from(ftj)
    resumes = f"; it resumes from the checkpoint of step {checkpoint.step}" if checkpoint else ""
    queued = queue.queued(ftj, trainer, f"trainer {trainer.kind} {trainer.name}")
    if queued is not None:
        waiting = StageCondition(ConditionStatus.UNKNOWN, "Queued", queued.message + resumes)
        return replace(queued, message=queued.message + resumes, trained=waiting)
    admitted = queue.admitted_condition(ftj, trainer)
    if trainer.ready:
        running = StageCondition(ConditionStatus.UNKNOWN, "Training", "training")
        return Decision(
            Phase.TRAINING,
            "Training",
            f"trainer {trainer.kind} {trainer.name} is running",
            trained=running,
            admitted=admitted,
            pods_ready=StageCondition(ConditionStatus.TRUE, "Running", "the trainer pods run"),
        )
    return _waiting("trainer", trainer, resumes, admitted)


def _waiting(stage: str, child: ChildJob, resumes: str, admitted: StageCondition | None) -> Decision:
    """Pods not running yet: on their way, or stuck with the reason of whoever refused them."""
    problem = child.problem
    if problem is not None:
        message = f"{stage} pods of {child.kind} {child.name} cannot run ({problem.reason}): "
        message += problem.message
        pods_ready = StageCondition(ConditionStatus.FALSE, problem.reason, problem.message)
        reason = problem.reason
    else:
        message = failure.retry_note(stage, child) or (
            f"waiting for the {stage} pods of {child.kind} {child.name}"
        )
        pods_ready = StageCondition(ConditionStatus.FALSE, "Starting", message)
        reason = "Scheduling"
    message += resumes
    waiting = StageCondition(ConditionStatus.UNKNOWN, "Pending", message)
    conditions = {"admitted": admitted, "pods_ready": pods_ready}
    if stage == "trainer":
        return Decision(Phase.PENDING, reason, message, trained=waiting, **conditions)  # type: ignore[arg-type]
    return Decision(Phase.EXPORTING, reason, message, exported=waiting, **conditions)  # type: ignore[arg-type]


def _export(ftj: FineTuneJob, trainer: ChildJob, exporter: ChildJob | None) -> Decision:
    """The trainer succeeded."""
    trained = StageCondition(
        ConditionStatus.TRUE, "TrainingSucceeded", f"trainer Job {trainer.name} succeeded"
    )
    if not ftj.spec.export.enabled:
        return Decision(
            Phase.SUCCEEDED,
            "Succeeded",
            "training succeeded; export is disabled",
            trained=trained,
            exported=EXPORT_DISABLED,
            completion_time=parse_time(trainer.completion_time),
        )
    if exporter is None:
        return Decision(
            Phase.EXPORTING, "Creating", "creating the export Job", Action.CREATE_EXPORTER, trained=trained
        )
    if exporter.failed_reason:
        message = failure.failure_message("export", exporter)
        reason = failure.QUALITY_GATE_FAILED if failure.missed_quality_gate(exporter) else "ExportFailed"
        failed = StageCondition(ConditionStatus.FALSE, reason, message)
        return Decision(
            Phase.FAILED,
            reason,
            message,
            trained=trained,
            exported=failed,
            completion_time=parse_time(exporter.completion_time),
        )
    if exporter.done:
        exported = StageCondition(
            ConditionStatus.TRUE, "ExportSucceeded", f"export Job {exporter.name} succeeded"
        )
        return Decision(
            Phase.SUCCEEDED,
            "Succeeded",
            "trained and exported",
            trained=trained,
            exported=exported,
            completion_time=parse_time(exporter.completion_time),
        )
    suspended = suspend.export_suspended(ftj, trained)
    if suspended is not None:
        return replace(suspended, admitted=queue.admitted_condition(ftj, exporter))
    queued = queue.queued(ftj, exporter, f"export Job {exporter.name}")
    if queued is not None:
        waiting = StageCondition(ConditionStatus.UNKNOWN, "Queued", queued.message)
        return replace(queued, trained=trained, exported=waiting)
    admitted = queue.admitted_condition(ftj, exporter)
    if not exporter.ready and not exporter.done:
        return replace(_waiting("export", exporter, "", admitted), trained=trained)
    running = StageCondition(ConditionStatus.UNKNOWN, "Exporting", "exporting")
    return Decision(
        Phase.EXPORTING,
        "Exporting",
        f"export Job {exporter.name} is running",
        trained=trained,
        exported=running,
        admitted=admitted,
        pods_ready=StageCondition(ConditionStatus.TRUE, "Running", "the export pod runs"),
    )

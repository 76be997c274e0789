"""One pass's decision, composed from the policies. The phase follows from the observed child Jobs
only: no trainer Job -> create it; trainer running -> Training; trainer succeeded -> create the export
Job; export succeeded -> Succeeded; a failed child -> Failed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.observation import ChildJob, Observed
from kubetune_operator.policies import failure, new_run, results, suspend, ttl
from kubetune_operator.policies.decision import Action, Decision, StageCondition, parse_time

EXPORT_DISABLED = StageCondition(ConditionStatus.FALSE, "ExportDisabled", "spec.export.enabled is false")


def decide(ftj: FineTuneJob, observed: Observed, now: datetime) -> Decision:
    stale = new_run.replace_stale(ftj, observed)
    if stale is not None:
        return stale
    trainer, exporter = observed.trainer, observed.exporter
    if trainer is None:
        return Decision(Phase.PENDING, "Creating", "creating the trainer Job", Action.CREATE_TRAINER)
    if trainer.done and not trainer.failed_reason:
        decision = _export(ftj, trainer, exporter)
    else:
        decision = _training(ftj, trainer)
    metrics, artifacts = results.collect(trainer, exporter)
    decision = replace(
        decision, metrics=metrics, artifacts=artifacts, start_time=parse_time(trainer.start_time)
    )
    return ttl.finish(ftj, decision, now)


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
        return suspended
    if trainer.ready:
        running = StageCondition(ConditionStatus.UNKNOWN, "Training", "training")
        return Decision(Phase.TRAINING, "Training", f"trainer Job {trainer.name} is running", trained=running)
    message = failure.retry_note("trainer", trainer) or (
        f"waiting for the trainer pod of Job {trainer.name} to start"
    )
    checkpoint = new_run.resume_from(ftj)
    if checkpoint is not None:
        message += f"; it resumes from the checkpoint of step {checkpoint.step}"
    waiting = StageCondition(ConditionStatus.UNKNOWN, "Pending", message)
    return Decision(Phase.PENDING, "Scheduling", message, trained=waiting)


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
        failed = StageCondition(ConditionStatus.FALSE, "ExportFailed", message)
        return Decision(
            Phase.FAILED,
            "ExportFailed",
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
        return suspended
    running = StageCondition(ConditionStatus.UNKNOWN, "Exporting", "exporting")
    return Decision(
        Phase.EXPORTING,
        "Exporting",
        f"export Job {exporter.name} is running",
        trained=trained,
        exported=running,
    )

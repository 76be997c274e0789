"""The phase, conditions and next action of a FineTuneJob, derived from its observed children.

Pure: the same observation always gives the same status, whatever the operator did before (so a
restarted operator computes exactly what its predecessor would have).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from kubetune_api import (
    Artifact,
    Condition,
    ConditionStatus,
    ConditionType,
    FineTuneJob,
    FineTuneJobStatus,
    Phase,
)
from kubetune_operator.observation import ChildJob, Observed

# The trainer's exit codes (trainer/kubetune_trainer/errors.py), for messages a person can act on.
EXIT_CODE_MEANINGS = {
    1: "unexpected error",
    2: "invalid configuration",
    3: "dataset error",
    4: "storage or credentials error",
    5: "model error",
    6: "export error",
    7: "stopped on SIGTERM after a checkpoint; resuming",
    137: "killed (SIGKILL)",
    143: "terminated (SIGTERM)",
}


class Action(StrEnum):
    NONE = "none"
    CREATE_TRAINER = "createTrainer"
    CREATE_EXPORTER = "createExporter"
    DELETE_STALE = "deleteStale"  # children of an older spec revision
    DELETE_FINETUNEJOB = "deleteFineTuneJob"  # ttlSecondsAfterFinished passed


@dataclass(frozen=True)
class Decision:
    phase: Phase
    reason: str
    message: str
    action: Action
    trained: tuple[ConditionStatus, str, str]
    exported: tuple[ConditionStatus, str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    completion_time: str | None = None
    start_time: str | None = None


def decide(ftj: FineTuneJob, observed: Observed, now: datetime) -> Decision:
    run_id = ftj.spec_hash()
    trainer, exporter = observed.trainer, observed.exporter
    if (trainer and trainer.run_id != run_id) or (exporter and exporter.run_id != run_id):
        return _decision(
            Phase.PENDING,
            "SpecChanged",
            "the spec changed: replacing the Jobs of the previous run",
            Action.DELETE_STALE,
        )
    export_enabled = ftj.spec.export.enabled
    unknown = (ConditionStatus.UNKNOWN, "Pending", "not started")
    skipped = (ConditionStatus.FALSE, "ExportDisabled", "spec.export.enabled is false")

    if trainer is None:
        return _decision(Phase.PENDING, "Creating", "creating the trainer Job", Action.CREATE_TRAINER)
    start = trainer.start_time
    if trainer.failed_reason:
        message = failure_message("trainer", trainer)
        failed = (ConditionStatus.FALSE, "TrainingFailed", message)
        return _finished(ftj, now, Phase.FAILED, "TrainingFailed", message, failed, unknown, trainer, start)
    if not trainer.done:
        if ftj.spec.suspend:
            return _decision(
                Phase.SUSPENDED,
                "Suspended",
                "spec.suspend is true: the trainer is stopped",
                trained=(ConditionStatus.UNKNOWN, "Suspended", "suspended"),
                start=start,
            )
        if trainer.ready:
            return _decision(
                Phase.TRAINING,
                "Training",
                f"trainer Job {trainer.name} is running",
                trained=(ConditionStatus.UNKNOWN, "Training", "training"),
                start=start,
            )
        message = f"waiting for the trainer pod of Job {trainer.name} to start"
        if trainer.failed:
            last = trainer.last_failure()
            message = f"retrying the trainer after {trainer.failed} failed attempt(s)"
            if last:
                message += f"; last: {describe_exit(last.exit_code, last.reason, last.message)}"
        checkpoint = ftj.status.last_checkpoint
        if checkpoint is not None and ftj.status.run_id == run_id:
            message += f"; it resumes from the checkpoint of step {checkpoint.step}"
        return _decision(
            Phase.PENDING,
            "Scheduling",
            message,
            trained=(ConditionStatus.UNKNOWN, "Pending", message),
            start=start,
        )

    trained_metrics = _metrics(trainer)
    trained = (ConditionStatus.TRUE, "TrainingSucceeded", f"trainer Job {trainer.name} succeeded")
    if not export_enabled:
        return _finished(
            ftj,
            now,
            Phase.SUCCEEDED,
            "Succeeded",
            "training succeeded; export is disabled",
            trained,
            skipped,
            trainer,
            start,
            metrics=trained_metrics,
            artifacts=_artifacts(trainer),
        )
    if exporter is None:
        return _decision(
            Phase.EXPORTING,
            "Creating",
            "creating the export Job",
            Action.CREATE_EXPORTER,
            trained=trained,
            metrics=trained_metrics,
            artifacts=_artifacts(trainer),
            start=start,
        )
    if exporter.failed_reason:
        message = failure_message("export", exporter)
        failed = (ConditionStatus.FALSE, "ExportFailed", message)
        return _finished(
            ftj,
            now,
            Phase.FAILED,
            "ExportFailed",
            message,
            trained,
            failed,
            exporter,
            start,
            metrics=trained_metrics,
            artifacts=_artifacts(trainer),
        )
    if not exporter.done and ftj.spec.suspend:
        return _decision(
            Phase.SUSPENDED,
            "Suspended",
            "spec.suspend is true: the export is stopped",
            trained=trained,
            exported=(ConditionStatus.UNKNOWN, "Suspended", "suspended"),
            metrics=trained_metrics,
            artifacts=_artifacts(trainer),
            start=start,
        )
    if not exporter.done:
        return _decision(
            Phase.EXPORTING,
            "Exporting",
            f"export Job {exporter.name} is running",
            trained=trained,
            exported=(ConditionStatus.UNKNOWN, "Exporting", "exporting"),
            metrics=trained_metrics,
            artifacts=_artifacts(trainer),
            start=start,
        )
    exported = (ConditionStatus.TRUE, "ExportSucceeded", f"export Job {exporter.name} succeeded")
    return _finished(
        ftj,
        now,
        Phase.SUCCEEDED,
        "Succeeded",
        "trained and exported",
        trained,
        exported,
        exporter,
        start,
        metrics={**trained_metrics, **_metrics(exporter)},
        artifacts=_merge_artifacts(_artifacts(trainer), _artifacts(exporter)),
    )


def _decision(
    phase: Phase,
    reason: str,
    message: str,
    action: Action = Action.NONE,
    *,
    trained: tuple[ConditionStatus, str, str] = (ConditionStatus.UNKNOWN, "Pending", "not started"),
    exported: tuple[ConditionStatus, str, str] = (ConditionStatus.UNKNOWN, "Pending", "not started"),
    metrics: dict[str, float] | None = None,
    artifacts: list[Artifact] | None = None,
    start: str | None = None,
) -> Decision:
    return Decision(
        phase, reason, message, action, trained, exported, metrics or {}, artifacts or [], start_time=start
    )


def _finished(
    ftj: FineTuneJob,
    now: datetime,
    phase: Phase,
    reason: str,
    message: str,
    trained: tuple[ConditionStatus, str, str],
    exported: tuple[ConditionStatus, str, str],
    last: ChildJob,
    start: str | None,
    *,
    metrics: dict[str, float] | None = None,
    artifacts: list[Artifact] | None = None,
) -> Decision:
    # Kept once set: the Job's own completionTime arrives a sync later and must not move it.
    previous = ftj.status.completion_time.isoformat() if ftj.status.completion_time else None
    completion = previous or last.completion_time or now.isoformat()
    action = Action.NONE
    ttl = ftj.spec.ttl_seconds_after_finished
    if ttl is not None:
        finished_at = datetime.fromisoformat(completion.replace("Z", "+00:00"))
        if (now - finished_at).total_seconds() >= ttl:
            action = Action.DELETE_FINETUNEJOB
    return Decision(
        phase,
        reason,
        message,
        action,
        trained,
        exported,
        metrics or {},
        artifacts or [],
        completion_time=completion,
        start_time=start,
    )


def describe_exit(exit_code: int, reason: str, message: str) -> str:
    what = "OOM-killed" if reason == "OOMKilled" else f"exit code {exit_code}"
    meaning = EXIT_CODE_MEANINGS.get(exit_code)
    text = f"{what} ({meaning})" if meaning and reason != "OOMKilled" else what
    detail = message.strip().splitlines()[-1] if message.strip() else ""
    return f"{text}: {detail}" if detail else text


def failure_message(stage: str, job: ChildJob) -> str:
    """Why a child failed, in the words of its pod (not just BackoffLimitExceeded)."""
    last = job.last_failure()
    if last is not None and last.reason == "OOMKilled":
        return (
            f"{stage} was OOM-killed (pod {last.pod}): raise spec.resources.memory, or lower "
            "training.batchSize or training.maxSeqLength"
        )
    if last is not None:
        return f"{stage} failed: {describe_exit(last.exit_code, last.reason, last.message)}"
    return f"{stage} Job {job.name} failed: {job.failed_reason}: {job.failed_message or ''}".strip()


def _metrics(job: ChildJob) -> dict[str, float]:
    last = job.result_outcome()
    raw = last.result().get("metrics") if last else None
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _artifacts(job: ChildJob) -> list[Artifact]:
    last = job.result_outcome()
    items = last.result().get("artifacts") if last else None
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        try:
            out.append(Artifact.model_validate(item))
        except ValueError:
            continue  # an artifact we cannot describe is still in the manifest in S3
    return out


def invalid_spec_status(
    old: FineTuneJobStatus, generation: int | None, message: str, now: datetime
) -> dict[str, Any]:
    """Failed at once, with the reason where the user looks; no Jobs are created."""
    stalled = ConditionStatus.TRUE, "InvalidSpec", message
    not_ready = ConditionStatus.FALSE, "InvalidSpec", message
    conditions = [
        _condition(old, generation, now, ConditionType.READY, *not_ready),
        _condition(
            old, generation, now, ConditionType.RECONCILING, ConditionStatus.FALSE, "InvalidSpec", message
        ),
        _condition(old, generation, now, ConditionType.STALLED, *stalled),
    ]
    status = old.model_copy(
        update={
            "phase": Phase.FAILED,
            "conditions": conditions,
            "observed_generation": generation,
            "message": message,
        }
    )
    return status.model_dump(mode="json", by_alias=True, exclude={"progress", "last_checkpoint"})


def _condition(
    old: FineTuneJobStatus,
    generation: int | None,
    now: datetime,
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    previous = old.condition(type_.value)
    changed = previous is None or previous.status != status
    return Condition(
        type=type_.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )


def _merge_artifacts(*groups: list[Artifact]) -> list[Artifact]:
    """One entry per (kind, uri): the exporter lists the trainer's adapter again; the later wins."""
    merged: dict[tuple[str, str], Artifact] = {}
    for group in groups:
        for artifact in group:
            merged[(artifact.kind, artifact.uri)] = artifact
    return list(merged.values())


def new_status(ftj: FineTuneJob, decision: Decision, now: datetime) -> dict[str, Any]:
    """The operator's part of the status (progress and lastCheckpoint belong to the trainer)."""
    old = ftj.status
    terminal = decision.phase in (Phase.SUCCEEDED, Phase.FAILED)
    generation = ftj.metadata.generation
    same_run = old.run_id == ftj.spec_hash() and decision.action != Action.DELETE_STALE
    idle_export = ("Pending", "ExportDisabled")

    def condition(type_: ConditionType, status: ConditionStatus, reason: str, message: str) -> Condition:
        return _condition(old, generation, now, type_, status, reason, message)

    T, F = ConditionStatus.TRUE, ConditionStatus.FALSE
    conditions = [
        condition(
            ConditionType.READY,
            T if decision.phase == Phase.SUCCEEDED else F,
            decision.reason,
            decision.message,
        ),
        condition(
            ConditionType.RECONCILING,
            F if terminal or decision.phase == Phase.SUSPENDED else T,
            decision.reason,
            decision.message,
        ),
        condition(
            ConditionType.STALLED,
            T if decision.phase == Phase.FAILED else F,
            decision.reason,
            decision.message,
        ),
        condition(ConditionType.TRAINED, *decision.trained),
        condition(ConditionType.EXPORTED, *decision.exported),
    ]
    status = FineTuneJobStatus(
        phase=decision.phase,
        conditions=conditions,
        observed_generation=generation,
        run_id=ftj.spec_hash(),
        # The Job's startTime moves on every resume; ours means "when training first started".
        start_time=(old.start_time if same_run else None) or _parse_time(decision.start_time),
        completion_time=_parse_time(decision.completion_time) if terminal else None,
        trainer_job_name=f"{ftj.metadata.name}-train",
        export_job_name=f"{ftj.metadata.name}-export" if decision.exported[1] not in idle_export else None,
        # Results of an earlier spec revision never show under the new run id.
        artifacts=decision.artifacts or (old.artifacts if same_run else []),
        metrics={**(old.metrics if same_run else {}), **decision.metrics},
        message=decision.message,
    )
    # Fields sent as null are removed by the merge patch (e.g. completionTime after a new revision).
    # progress and lastCheckpoint are the trainer's to write, except that a new run clears them, and the
    # previous run's metrics, whose keys a merge patch only removes one by one.
    body = status.model_dump(mode="json", by_alias=True, exclude={"progress", "last_checkpoint"})
    if old.run_id is not None and not same_run:
        body["progress"] = body["lastCheckpoint"] = None
        body["metrics"] = {**dict.fromkeys(old.metrics), **body["metrics"]}
    return body


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

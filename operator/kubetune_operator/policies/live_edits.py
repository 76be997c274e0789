"""Edits of backoffLimit and activeDeadlineSeconds reach the running workload. A plain Job takes both
as a patch. A JobSet's failurePolicy is immutable, so a multi-node group keeps the maxRestarts it
started with, and says so in the BackoffLimitApplied condition."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubetune_api import ConditionStatus, FineTuneJob
from kubetune_operator.builders import names
from kubetune_operator.observation import ChildJob, Observed
from kubetune_operator.policies import deadline
from kubetune_operator.policies.decision import StageCondition


def _unfinished(child: ChildJob | None) -> bool:
    return child is not None and not child.done and not child.failed_reason


def wanted_backoff_limit(ftj: FineTuneJob, child: ChildJob) -> int:
    # The export is retried at most once (builders/jobs.export_job).
    limit = ftj.spec.backoff_limit
    return limit if child.name == names.trainer_job_name(ftj) else min(limit, 1)


def job_patches(
    ftj: FineTuneJob, observed: Observed, start: datetime | None
) -> list[tuple[str, dict[str, Any]]]:
    """(Job name, spec patch) for each unfinished plain Job whose limits differ from the spec's."""
    patches = []
    for child in (observed.trainer, observed.exporter):
        if child is None or child.kind != "Job" or not _unfinished(child):
            continue
        spec: dict[str, Any] = {}
        backoff = wanted_backoff_limit(ftj, child)
        if child.backoff_limit != backoff:
            spec["backoffLimit"] = backoff
        job_deadline = deadline.job_deadline(ftj, start, child)
        if ftj.spec.active_deadline_seconds is None:
            if child.active_deadline_seconds is not None:
                spec["activeDeadlineSeconds"] = None
        elif job_deadline is not None and child.active_deadline_seconds != job_deadline:
            spec["activeDeadlineSeconds"] = job_deadline
        if spec:
            patches.append((child.name, {"spec": spec}))
    return patches


def backoff_limit_condition(ftj: FineTuneJob, observed: Observed) -> StageCondition | None:
    """False while a running JobSet keeps another restart limit than spec.backoffLimit."""
    trainer = observed.trainer
    if trainer is None or trainer.kind != "JobSet" or not _unfinished(trainer):
        return None
    if trainer.backoff_limit in (None, ftj.spec.backoff_limit):
        return StageCondition(ConditionStatus.TRUE, "Applied", f"maxRestarts {trainer.backoff_limit}")
    return StageCondition(
        ConditionStatus.FALSE,
        "ImmutableOnJobSet",
        f"backoffLimit {ftj.spec.backoff_limit} cannot reach the running multi-node group: a JobSet's "
        f"failurePolicy is immutable, so it keeps maxRestarts {trainer.backoff_limit} until this run ends",
    )

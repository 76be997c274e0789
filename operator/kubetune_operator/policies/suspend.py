"""Suspend: while spec.suspend is true the unfinished stage is stopped, through its Job's own
spec.suspend (the Job controller deletes the pods; the trainer checkpoints on SIGTERM). A stage that
has not started is still created, suspended, so resuming needs nothing but the flag."""

from __future__ import annotations

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.observation import Observed
from kubetune_operator.policies.decision import Decision, StageCondition

SUSPENDED = StageCondition(ConditionStatus.UNKNOWN, "Suspended", "suspended")


def training_suspended(ftj: FineTuneJob) -> Decision | None:
    """For an unfinished trainer."""
    if not ftj.spec.suspend:
        return None
    return Decision(
        Phase.SUSPENDED, "Suspended", "spec.suspend is true: the trainer is stopped", trained=SUSPENDED
    )


def export_suspended(ftj: FineTuneJob, trained: StageCondition) -> Decision | None:
    """For an unfinished export, after training succeeded."""
    if not ftj.spec.suspend:
        return None
    return Decision(
        Phase.SUSPENDED,
        "Suspended",
        "spec.suspend is true: the export is stopped",
        trained=trained,
        exported=SUSPENDED,
    )


def job_patches(ftj: FineTuneJob, observed: Observed) -> list[tuple[str, bool]]:
    """(Job name, suspend) for each unfinished child Job whose spec.suspend differs from the spec's.
    None for a queued job: Kueue owns its suspend (policies/queue.py carries spec.suspend instead)."""
    if ftj.queue_name is not None:
        return []
    want = ftj.spec.suspend
    return [
        (child.name, want)
        for child in (observed.trainer, observed.exporter)
        if child is not None and not child.done and not child.failed_reason and child.spec_suspend != want
    ]

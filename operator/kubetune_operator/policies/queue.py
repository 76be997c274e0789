"""Kueue: a queued child waits, suspended, until Kueue admits its Workload. The operator never
unsuspends it; a user's spec.suspend maps to the Workload's spec.active instead, which Kueue honours
by evicting it (and keeping it suspended)."""

from __future__ import annotations

from kubetune_api import ConditionStatus, FineTuneJob, Phase
from kubetune_operator.observation import ChildJob, Observed
from kubetune_operator.policies.decision import Decision, StageCondition

NO_WORKLOAD_YET = "waiting for Kueue to create the workload"
# The operator's own reasons before Kueue has a say (no Workload yet, or one Kueue has not evaluated):
# no Event, Kueue's verdict follows within seconds and gets its own.
WAITING_FOR_WORKLOAD = "WaitingForWorkload"
WAITING_FOR_VERDICT = "WaitingForKueue"
BEFORE_THE_VERDICT = (WAITING_FOR_WORKLOAD, WAITING_FOR_VERDICT)


def admitted_condition(ftj: FineTuneJob, child: ChildJob) -> StageCondition | None:
    """The Admitted condition of a queued child, in Kueue's words; None when not queued."""
    if ftj.queue_name is None:
        return None
    a = child.admission
    if a is None:
        return StageCondition(
            ConditionStatus.FALSE, WAITING_FOR_WORKLOAD, f"queue {ftj.queue_name}: {NO_WORKLOAD_YET}"
        )
    if a.admitted:
        return StageCondition(
            ConditionStatus.TRUE, "Admitted", f"admitted by queue {ftj.queue_name} (workload {a.workload})"
        )
    if not a.evaluated:
        message = f"queue {ftj.queue_name}: {a.message}"
        return StageCondition(ConditionStatus.FALSE, WAITING_FOR_VERDICT, message)
    return StageCondition(ConditionStatus.FALSE, a.reason, f"queue {ftj.queue_name}: {a.message}")


def queued(ftj: FineTuneJob, child: ChildJob, stage: str) -> Decision | None:
    """Queued while Kueue holds the child; None once it is admitted (or when it is not queued)."""
    admitted = admitted_condition(ftj, child)
    if admitted is None or admitted.status == ConditionStatus.TRUE:
        return None
    if child.admission is None and not child.spec_suspend:
        return None  # started without a Workload: Kueue does not manage it
    message = f"{stage} waiting for Kueue ({admitted.reason}): {admitted.message}"
    return Decision(
        Phase.QUEUED,
        "Queued",
        message,
        admitted=admitted,
        pods_ready=StageCondition(ConditionStatus.FALSE, "Queued", message),
    )


def workload_patches(ftj: FineTuneJob, observed: Observed) -> list[tuple[str, bool]]:
    """(Workload name, spec.active) for each unfinished queued child whose activity differs from
    what spec.suspend asks."""
    if ftj.queue_name is None:
        return []
    want_active = not ftj.spec.suspend
    return [
        (child.admission.workload, want_active)
        for child in (observed.trainer, observed.exporter)
        if child is not None
        and child.admission is not None
        and not child.done
        and not child.failed_reason
        and child.admission.active != want_active
    ]

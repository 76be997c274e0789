"""One reconciliation pass: observe -> decide -> act -> write status (once, and only if it changed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from kubetune_api import ConditionStatus, ConditionType, FineTuneJob, Phase
from kubetune_operator.builders import names
from kubetune_operator.observation import Observed
from kubetune_operator.policies import deadline, dry_run, live_edits, new_run, queue, suspend, ttl
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, Decision
from kubetune_operator.policies.failure import QUALITY_GATE_FAILED
from kubetune_operator.services.children import Children
from kubetune_operator.services.metrics_recorder import MetricsRecorder, instrumented
from kubetune_operator.services.status_writer import StatusWriter
from kubetune_operator.status import new_status


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class PassResult:
    decision: Decision
    events: list[Event]
    status_written: bool


class Reconciler:
    def __init__(
        self,
        children: Children,
        status: StatusWriter,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.children = children
        self.status = status
        self.clock = clock
        self.metrics = metrics if metrics is not None else MetricsRecorder()

    @instrumented
    def reconcile(self, ftj: FineTuneJob, observed: Observed) -> PassResult:
        now = self.clock()
        decision = decide(ftj, observed, now)
        events = self._act(ftj, observed, decision, now)
        status = new_status(ftj, decision, now)
        written = self.status.write(
            ftj.metadata,
            ftj.status,
            status,
            clear_trainer_fields=new_run.clear_trainer_fields(ftj, decision),
        )
        self.metrics.record(ftj, status, now, deleting=decision.action == Action.DELETE_FINETUNEJOB)
        if decision.phase != ftj.status.phase:
            warning = decision.phase == Phase.FAILED
            events.append(Event("Warning" if warning else "Normal", decision.phase.value, decision.message))
        events += _condition_events(ftj, decision)
        # Each warning of a newly reported plan: a Warning Event (errors fail the run, whose Event says).
        events += [
            Event("Warning", reason, message) for reason, message in dry_run.new_warnings(ftj, decision)
        ]
        if decision.stops.lost_checkpoints > (ftj.status.lost_checkpoints or 0):
            events.append(Event("Warning", "CheckpointLost", LOST_CHECKPOINT_MESSAGE))
        return PassResult(decision, events, written)

    def _act(self, ftj: FineTuneJob, observed: Observed, decision: Decision, now: dt.datetime) -> list[Event]:
        events: list[Event] = []
        start = deadline.run_start(ftj, observed.trainer)
        if decision.action == Action.CREATE_TRAINER and self.children.create_trainer(
            ftj, deadline.remaining_seconds(ftj, start, now)
        ):
            kind = "JobSet" if ftj.spec.resources.nodes > 1 else "Job"
            events.append(Event("Normal", "CreatedTrainer", f"created {kind} {names.trainer_job_name(ftj)}"))
        elif decision.action == Action.CREATE_EXPORTER and self.children.create_exporter(
            ftj, deadline.remaining_seconds(ftj, start, now)
        ):
            events.append(Event("Normal", "CreatedExportJob", f"created Job {names.export_job_name(ftj)}"))
        elif decision.action == Action.CREATE_PLANNER and self.children.create_planner(ftj):
            events.append(Event("Normal", "CreatedPlanJob", f"created Job {names.plan_job_name(ftj)}"))
        elif decision.action == Action.STOP_UNFINISHED:
            for child in (observed.trainer, observed.exporter, observed.planner):
                if child is not None and not child.done and not child.failed_reason:
                    self.children.delete_child(ftj, child.kind, child.name)
        elif decision.action == Action.DELETE_STALE:
            self.children.delete_run(ftj)
            events.append(Event("Normal", "SpecChanged", "spec changed: deleting the previous run's Jobs"))
        elif decision.action == Action.DELETE_FINETUNEJOB:
            self.children.delete_finetunejob(ftj)
            events.append(Event("Normal", "Expired", "ttlSecondsAfterFinished passed: deleting"))
        if decision.finished:
            for kind, name, patch in ttl.job_patches(
                observed, self.children.settings.finished_job_ttl_seconds
            ):
                self.children.patch_child(ftj, kind, name, patch)
            return events
        for job_name, suspended in suspend.job_patches(ftj, observed):
            self.children.set_suspend(ftj, job_name, suspended)
            events.append(Event("Normal", "Suspended" if suspended else "Resumed", job_name))
        for workload, active in queue.workload_patches(ftj, observed):
            self.children.set_workload_active(ftj, workload, active)
            events.append(Event("Normal", "Resumed" if active else "Suspended", f"Workload {workload}"))
        for job_name, patch in live_edits.job_patches(ftj, observed, start):
            self.children.patch_job(ftj, job_name, patch)
        return events


LOST_CHECKPOINT_MESSAGE = (
    "the trainer stopped on SIGTERM but its checkpoint did not upload: the retry resumes from an older "
    "checkpoint and counts against backoffLimit"
)

# Conditions whose False state is news to the user: a Warning Event when they turn False or change
# reason, with the message of whoever refused (scheduler, quota, kubelet, Kueue).
WARN_ON_FALSE = (
    (ConditionType.PODS_READY, "pods_ready", ("Starting", "Queued")),
    (ConditionType.BACKOFF_LIMIT_APPLIED, "backoff_limit_applied", ()),
)


def _condition_events(ftj: FineTuneJob, decision: Decision) -> list[Event]:
    events = []
    for type_, field, quiet_reasons in WARN_ON_FALSE:
        state = getattr(decision, field)
        if state is None or state.status != ConditionStatus.FALSE or state.reason in quiet_reasons:
            continue
        previous = ftj.status.condition(type_.value)
        if previous is None or (previous.status, previous.reason, previous.message) != tuple(state):
            events.append(Event("Warning", state.reason, state.message))
    exported, before = decision.exported, ftj.status.condition(ConditionType.EXPORTED.value)
    if exported.reason == QUALITY_GATE_FAILED and (before is None or before.reason != QUALITY_GATE_FAILED):
        # Its own Event: what the gate refused, and where the rejected files are.
        events.append(Event("Warning", QUALITY_GATE_FAILED, exported.message))
    admitted, previous = decision.admitted, ftj.status.condition(ConditionType.ADMITTED.value)
    if (
        admitted is not None
        and admitted.reason not in queue.BEFORE_THE_VERDICT
        and (previous is None or (previous.status, previous.reason) != admitted[:2])
    ):
        # Kueue's verdict: Normal when admitted, Warning when held or evicted.
        kind = "Normal" if admitted.status == ConditionStatus.TRUE else "Warning"
        events.append(Event(kind, admitted.reason, admitted.message))
    return events

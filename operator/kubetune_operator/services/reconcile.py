"""One reconciliation pass: observe -> decide -> act -> write status (once, and only if it changed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from kubetune_api import FineTuneJob, Phase
from kubetune_operator.builders import names
from kubetune_operator.observation import Observed
from kubetune_operator.policies import new_run, suspend
from kubetune_operator.policies.decide import decide
from kubetune_operator.policies.decision import Action, Decision
from kubetune_operator.services.children import Children
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
    def __init__(self, children: Children, status: StatusWriter) -> None:
        self.children = children
        self.status = status

    def reconcile(self, ftj: FineTuneJob, observed: Observed) -> PassResult:
        now = dt.datetime.now(dt.UTC)
        decision = decide(ftj, observed, now)
        events = self._act(ftj, observed, decision)
        written = self.status.write(
            ftj.metadata,
            ftj.status,
            new_status(ftj, decision, now),
            clear_trainer_fields=new_run.clear_trainer_fields(ftj, decision),
        )
        if decision.phase != ftj.status.phase:
            warning = decision.phase == Phase.FAILED
            events.append(Event("Warning" if warning else "Normal", decision.phase.value, decision.message))
        return PassResult(decision, events, written)

    def _act(self, ftj: FineTuneJob, observed: Observed, decision: Decision) -> list[Event]:
        events: list[Event] = []
        if decision.action == Action.CREATE_TRAINER and self.children.create_trainer(ftj):
            events.append(Event("Normal", "CreatedTrainerJob", f"created Job {names.trainer_job_name(ftj)}"))
        elif decision.action == Action.CREATE_EXPORTER and self.children.create_exporter(ftj):
            events.append(Event("Normal", "CreatedExportJob", f"created Job {names.export_job_name(ftj)}"))
        elif decision.action == Action.DELETE_STALE:
            self.children.delete_run(ftj)
            events.append(Event("Normal", "SpecChanged", "spec changed: deleting the previous run's Jobs"))
        elif decision.action == Action.DELETE_FINETUNEJOB:
            self.children.delete_finetunejob(ftj)
            events.append(Event("Normal", "Expired", "ttlSecondsAfterFinished passed: deleting"))
        for job_name, suspended in suspend.job_patches(ftj, observed):
            self.children.set_suspend(ftj, job_name, suspended)
            events.append(Event("Normal", "Suspended" if suspended else "Resumed", job_name))
        return events

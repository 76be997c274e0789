"""One reconciliation pass: observe -> decide -> act -> write status (once, and only if it changed)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from kubetune_api import GROUP, PLURAL, VERSION, FineTuneJob, FineTuneJobStatus, ObjectMeta, Phase
from kubetune_operator.observation import Observed
from kubetune_operator.services.children import Children
from kubetune_operator.status import Action, Decision, decide, new_status

log = logging.getLogger(__name__)


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
    def __init__(self, api: client.ApiClient, children: Children) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.children = children

    def reconcile(self, ftj: FineTuneJob, observed: Observed) -> PassResult:
        now = dt.datetime.now(dt.UTC)
        decision = decide(ftj, observed, now)
        events = self._act(ftj, observed, decision)
        status = new_status(ftj, decision, now)
        written = self.write_status(ftj.metadata, ftj.status, status)
        if decision.phase != ftj.status.phase:
            warning = decision.phase == Phase.FAILED
            events.append(Event("Warning" if warning else "Normal", decision.phase.value, decision.message))
        return PassResult(decision, events, written)

    def _act(self, ftj: FineTuneJob, observed: Observed, decision: Decision) -> list[Event]:
        events: list[Event] = []
        if decision.action == Action.CREATE_TRAINER and self.children.create_trainer(ftj):
            events.append(Event("Normal", "CreatedTrainerJob", f"created Job {ftj.metadata.name}-train"))
        elif decision.action == Action.CREATE_EXPORTER and self.children.create_exporter(ftj):
            events.append(Event("Normal", "CreatedExportJob", f"created Job {ftj.metadata.name}-export"))
        elif decision.action == Action.DELETE_STALE:
            self.children.delete_run(ftj)
            events.append(Event("Normal", "SpecChanged", "spec changed: deleting the previous run's Jobs"))
        elif decision.action == Action.DELETE_FINETUNEJOB:
            self.children.delete_finetunejob(ftj)
            events.append(Event("Normal", "Expired", "ttlSecondsAfterFinished passed: deleting"))
        for child in (observed.trainer, observed.exporter):
            unfinished = child is not None and not child.done and not child.failed_reason
            if child is not None and unfinished and child.spec_suspend != ftj.spec.suspend:
                self.children.set_suspend(ftj, child.name, ftj.spec.suspend)
                events.append(Event("Normal", "Suspended" if ftj.spec.suspend else "Resumed", child.name))
        return events

    def write_status(self, meta: ObjectMeta, current: FineTuneJobStatus, status: dict[str, Any]) -> bool:
        """One merge patch of the status subresource, skipped when nothing but timestamps changed."""
        old = current.model_dump(mode="json", by_alias=True, exclude={"progress", "last_checkpoint"})
        if _without_times(old) == _without_times(status):
            return False
        self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            str(meta.namespace),
            PLURAL,
            str(meta.name),
            {"status": status},
            _content_type="application/merge-patch+json",
        )
        return True


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """Status compared for change; a transition time alone is no reason to write."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
    ]
    return out

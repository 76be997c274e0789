"""One pass over a FineTuneSweep: list its trials by label -> decide -> create the next trials and stop
the hopeless ones -> write the status once (and only if it changed)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from kubetune_api import GROUP, PLURAL, VERSION, ObjectMeta, describe_errors, plain_data
from kubetune_api.sweep import FineTuneSweep, FineTuneSweepStatus, SweepPhase
from kubetune_operator.builders import sweep as builder
from kubetune_operator.policies import sweep as policy
from kubetune_operator.services.reconcile import Event
from kubetune_operator.services.sweep_status_writer import SweepStatusWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPass:
    phase: SweepPhase
    events: list[Event]
    status_written: bool


class TrialNameTaken(Exception):
    """A trial's name is held by a FineTuneJob the sweep does not own: the sweep cannot run."""


class SweepService:
    def __init__(
        self,
        api: client.ApiClient,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.writer = SweepStatusWriter(self.custom)
        self.clock = clock

    # ---- the pass ---------------------------------------------------------------------------------
    def reconcile(self, obj: Mapping[str, Any]) -> SweepPass:
        raw: dict[str, Any] = plain_data(obj)
        now = self.clock()
        try:
            sweep = FineTuneSweep.from_k8s(raw)
        except ValidationError as e:
            return self._invalid(raw, f"invalid spec: {describe_errors(e)}", now)
        planned = builder.trials(sweep)
        bodies, invalid = {}, None
        for trial in planned:
            try:
                bodies[trial.name] = builder.validated_trial_job(sweep, trial)
            except ValidationError as e:
                invalid = f"invalid trial {trial.name} {trial.parameters}: {describe_errors(e)}"
                break
        children = self.list_trials(sweep)
        decision = policy.decide(sweep, planned, children, invalid)
        events: list[Event] = []
        if invalid is None:
            events, refused = self._act(sweep, decision, bodies)
            if refused is not None:
                decision = policy.decide(sweep, planned, children, refused)
        status = policy.sweep_status(sweep, decision, now)
        written = self.writer.write(sweep.metadata, sweep.status, status)
        if written and decision.phase != sweep.status.phase:
            if decision.phase == SweepPhase.FAILED:
                events.append(Event("Warning", decision.reason, decision.message))
            elif decision.phase == SweepPhase.SUCCEEDED:
                events.append(Event("Normal", "Succeeded", decision.message))
        return SweepPass(decision.phase, events, written)

    def _invalid(self, raw: dict[str, Any], message: str, now: dt.datetime) -> SweepPass:
        """A sweep the models reject (one an older CRD admitted): Stalled, with a Warning Event when
        the status first says so."""
        meta = ObjectMeta.model_validate(raw.get("metadata") or {})
        try:
            current = FineTuneSweepStatus.model_validate(raw.get("status") or {})
        except ValidationError:
            current = FineTuneSweepStatus()
        new = policy.invalid_sweep_status(current, meta.generation, message, now)
        written = self.writer.write(meta, current, new)
        events = [Event("Warning", "InvalidSpec", message)] if written else []
        return SweepPass(SweepPhase.FAILED, events, written)

    def _act(
        self, sweep: FineTuneSweep, decision: policy.SweepDecision, bodies: dict[str, dict[str, Any]]
    ) -> tuple[list[Event], str | None]:
        """Stop, then create; returns the Events and why the API server refused a trial, if it did."""
        events = []
        for stop in decision.stop:
            self.stop_trial(sweep, stop.name, stop.message)
            events.append(Event("Normal", "EarlyStopped", f"{stop.name}: {stop.message}"))
        for trial in decision.create:
            try:
                created = self.create_trial(sweep, bodies[trial.name])
            except TrialNameTaken as taken:
                return events, str(taken)
            except ApiException as e:
                if e.status in (400, 422):
                    # The API server's CRD refused what our models accept: the sweep cannot run.
                    return events, f"the API server refused trial {trial.name}: {e.reason}: {e.body}"
                raise
            if created:
                events.append(Event("Normal", "CreatedTrial", f"created FineTuneJob {trial.name}"))
        return events, None

    # ---- Kubernetes I/O ---------------------------------------------------------------------------
    def list_trials(self, sweep: FineTuneSweep) -> dict[str, policy.TrialChild]:
        """The sweep's trial FineTuneJobs, by name: labelled with the sweep and owned by this one (a
        sweep re-created under the same name never adopts its predecessor's trials)."""
        found: Any = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            str(sweep.metadata.namespace),
            PLURAL,
            label_selector=f"{builder.SWEEP_LABEL}={sweep.metadata.name}",
        )
        out = {}
        for item in found.get("items", []):
            owners = (item.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("uid") == sweep.metadata.uid and o.get("controller") for o in owners):
                child = policy.trial_child(item)
                out[child.name] = child
        return out

    def create_trial(self, sweep: FineTuneSweep, body: dict[str, Any]) -> bool:
        """True if created now, False if this sweep's trial exists already (a fixed name makes this
        idempotent); TrialNameTaken if another FineTuneJob holds the name."""
        namespace, name = str(sweep.metadata.namespace), body["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        except ApiException as e:
            if e.status != 409:
                raise
            existing: Any = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            owners = (existing.get("metadata") or {}).get("ownerReferences") or []
            if any(o.get("uid") == sweep.metadata.uid and o.get("controller") for o in owners):
                return False
            raise TrialNameTaken(
                f"FineTuneJob {name} already exists and is not a trial of this sweep: delete it, or "
                "give the sweep another name"
            ) from e
        return True

    def stop_trial(self, sweep: FineTuneSweep, name: str, reason: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, str(sweep.metadata.namespace), PLURAL, name, builder.stop_patch(reason)
        )

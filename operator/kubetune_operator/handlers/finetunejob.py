"""FineTuneJob handlers: validate on every change; reconcile on a short timer from indexed children."""

from __future__ import annotations

import datetime as dt
from typing import Any

import kopf
from pydantic import ValidationError

from kubetune_api import (
    GROUP,
    PLURAL,
    VERSION,
    FineTuneJob,
    FineTuneJobStatus,
    ObjectMeta,
    describe_errors,
    plain_data,
)
from kubetune_operator import metrics
from kubetune_operator.builders import names
from kubetune_operator.observation import Observed, observe
from kubetune_operator.runtime import runtime
from kubetune_operator.settings import OperatorSettings
from kubetune_operator.status import invalid_spec_status

CHILD_SELECTOR = {names.MANAGED_BY_LABEL: names.MANAGED_BY}


class InvalidSpec(Exception):
    pass


def parse(body: kopf.Body) -> FineTuneJob:
    """The object as our model, or InvalidSpec naming every problem. The models carry the CRD's CEL
    rules as Python twins, so this rejects what an API server with an older CRD may have admitted."""
    try:
        return FineTuneJob.from_k8s(body)
    except ValidationError as e:
        raise InvalidSpec(describe_errors(e)) from e


# ---- children, observed through indexes (no API calls per pass) ------------------------------------
@kopf.index("batch", "v1", "jobs", labels=CHILD_SELECTOR)
def child_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels.get(names.FINETUNEJOB_LABEL)): plain_data(body)}


@kopf.index("", "v1", "pods", labels=CHILD_SELECTOR)
def child_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels.get(names.FINETUNEJOB_LABEL)): plain_data(body)}


def observed(ftj: FineTuneJob, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]) -> Observed:
    key = (ftj.metadata.namespace, ftj.metadata.name)
    return observe(ftj, list(jobs.get(key, [])), list(pods.get(key, [])))


# ---- the FineTuneJob ------------------------------------------------------------------------------
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
def validate(body: kopf.Body, **_: Any) -> None:
    """A spec the models reject (one an older CRD admitted) fails at once, visibly, and is not retried."""
    try:
        parse(body)
    except InvalidSpec as e:
        message = f"invalid spec: {e}"
        meta = ObjectMeta.model_validate(plain_data(body.get("metadata", {})))
        try:
            current = FineTuneJobStatus.model_validate(plain_data(body.get("status") or {}))
        except ValidationError:
            current = FineTuneJobStatus()
        new = invalid_spec_status(current, meta.generation, message, dt.datetime.now(dt.UTC))
        runtime().status_writer.write(meta, current, new, clear_trainer_fields=False)
        metrics.INVALID_SPECS.inc()
        kopf.warn(body, reason="InvalidSpec", message=message)
        raise kopf.PermanentError(message) from e


# Kopf passes indexes as extra keyword arguments, which its TimerFn protocol does not declare.
@kopf.timer(GROUP, VERSION, PLURAL, interval=OperatorSettings.from_env().resync_seconds, initial_delay=0)  # type: ignore[arg-type]
def reconcile(
    body: kopf.Body,
    child_jobs: kopf.Index[Any, Any],
    child_pods: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    try:
        ftj = parse(body)
    except InvalidSpec:
        return  # validate() reported it; a new spec triggers it again
    result = runtime().reconciler.reconcile(ftj, observed(ftj, child_jobs, child_pods))
    metrics.RECONCILES.labels(phase=result.decision.phase.value).inc()
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)  # type: ignore[arg-type]
def child_job_changed(
    namespace: str | None,
    labels: kopf.Labels,
    type: str | None,
    child_jobs: kopf.Index[Any, Any],
    child_pods: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """React to a child Job's change at once; the timer stays the safety net."""
    name = labels.get(names.FINETUNEJOB_LABEL)
    if not name or namespace is None or type is None:
        return  # the initial listing: the timer covers it
    raw = runtime().get_finetunejob(namespace, name)
    if raw is None:
        return
    body = kopf.Body(raw)  # type: ignore[arg-type]
    try:
        ftj = parse(body)
    except InvalidSpec:
        return
    result = runtime().reconciler.reconcile(ftj, observed(ftj, child_jobs, child_pods))
    for event in result.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)

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
from kubetune_operator.observation import Children, Observed, observe
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


@kopf.index("jobset.x-k8s.io", "v1alpha2", "jobsets", labels=CHILD_SELECTOR)
def child_jobsets(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels.get(names.FINETUNEJOB_LABEL)): plain_data(body)}


def _owned_by_child(body: kopf.Body, **_: Any) -> bool:
    """Kueue's Workloads carry no labels of ours; they are owned by our Job or JobSet."""
    return any(
        ref.get("kind") in ("Job", "JobSet") for ref in body.get("metadata", {}).get("ownerReferences", [])
    )


@kopf.index("kueue.x-k8s.io", "v1beta2", "workloads", when=_owned_by_child)
def child_workloads(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    owners = [
        r for r in body.get("metadata", {}).get("ownerReferences", []) if r.get("kind") in ("Job", "JobSet")
    ]
    return {(namespace, owners[0]["name"]): plain_data(body)}


def _pods_refused(body: kopf.Body, **_: Any) -> bool:
    return body.get("reason") == "FailedCreate" and body.get("involvedObject", {}).get("kind") == "Job"


@kopf.index("", "v1", "events", when=_pods_refused)
def job_events(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """The Job controller's FailedCreate Events: a ResourceQuota or an admission refused the pods."""
    return {(namespace, body.get("involvedObject", {}).get("name")): plain_data(body)}


def observed(ftj: FineTuneJob, indexes: dict[str, kopf.Index[Any, Any]]) -> Observed:
    ns = ftj.metadata.namespace
    key = (ns, ftj.metadata.name)
    child_names = (
        names.trainer_job_name(ftj),
        names.export_job_name(ftj),
        names.trainer_group_job_name(ftj),
        names.plan_job_name(ftj),
    )
    workloads = {
        name: found[-1]
        for name in child_names
        if (found := list(indexes["child_workloads"].get((ns, name), [])))
    }
    events = {name: list(indexes["job_events"].get((ns, name), [])) for name in child_names}
    raw = Children(
        jobs=list(indexes["child_jobs"].get(key, [])),
        pods=list(indexes["child_pods"].get(key, [])),
        jobsets=list(indexes["child_jobsets"].get(key, [])),
        workloads=workloads,
        events=events,
    )
    available = ftj.spec.resources.nodes == 1 or runtime().reconciler.children.jobset_available()
    return observe(ftj, raw, jobset_available=available)


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


@kopf.timer(GROUP, VERSION, PLURAL, interval=OperatorSettings.from_env().resync_seconds, initial_delay=0)
def reconcile(namespace: str | None, name: str | None, **kwargs: Any) -> None:
    if namespace and name:
        reconcile_one(namespace, name, kwargs)


def reconcile_one(namespace: str, name: str, kwargs: dict[str, Any]) -> None:
    """One pass over the FineTuneJob as it is now: read fresh under its lock, so a pass never decides
    (or posts Events) from a status that another pass has already moved on from."""
    with runtime().pass_lock(namespace, name):
        raw = runtime().get_finetunejob(namespace, name)
        if raw is None:
            return
        body = kopf.Body(raw)  # type: ignore[arg-type]
        try:
            ftj = parse(body)
        except InvalidSpec:
            return  # validate() reported it; a new spec triggers it again
        result = runtime().reconciler.reconcile(ftj, observed(ftj, _indexes(kwargs)))
        metrics.RECONCILES.labels(phase=result.decision.phase.value).inc()
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(namespace: str | None, name: str | None, **_: Any) -> None:
    """A deleted FineTuneJob's series leave the metrics at once (optional: no finalizer for this)."""
    if namespace and name:
        runtime().reconciler.metrics.forget(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_SELECTOR)
@kopf.on.event("jobset.x-k8s.io", "v1alpha2", "jobsets", labels=CHILD_SELECTOR)
def child_job_changed(namespace: str | None, labels: kopf.Labels, type: str | None, **kwargs: Any) -> None:
    """React to a child Job's change at once; the timer stays the safety net."""
    name = labels.get(names.FINETUNEJOB_LABEL)
    if not name or namespace is None or type is None:
        return  # the initial listing: the timer covers it
    reconcile_one(namespace, name, kwargs)


INDEXES = ("child_jobs", "child_pods", "child_jobsets", "child_workloads", "job_events")


def _indexes(kwargs: dict[str, Any]) -> dict[str, kopf.Index[Any, Any]]:
    """Kopf passes each index as a keyword argument named after its function."""
    return {name: kwargs[name] for name in INDEXES}

"""What the operator sees of a FineTuneJob's children, reduced to the facts its decisions need.

Built from raw Job and Pod objects (as dicts from the watch) by pure functions, so the same code
serves the Kopf indexes and the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune_api import FineTuneJob
from kubetune_operator.builders import names

# Set by the Job controller on each of its pods.
JOB_NAME_LABEL = "job-name"


@dataclass(frozen=True)
class ContainerOutcome:
    """The last termination of a child pod's main container."""

    pod: str
    exit_code: int
    reason: str  # Completed, Error, OOMKilled, ...
    message: str
    finished_at: str = ""
    # The reason of the pod's DisruptionTarget condition (PreemptionByScheduler, EvictionByEvictionAPI,
    # DeletionByTaintManager, TerminationByKubelet, ...): stopped from outside, not by its own fault.
    disruption: str = ""

    def result(self) -> dict[str, Any]:
        """The JSON result document a successful trainer/exporter leaves as termination message."""
        try:
            value = json.loads(self.message)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class ChildJob:
    name: str
    run_id: str
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    suspended: bool = False  # the Job's Suspended condition is True
    spec_suspend: bool = False  # what the Job's spec asks for
    complete: bool = False
    failed_reason: str | None = None  # set when the Job's Failed condition is True
    failed_message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None
    completions: int = 1  # pods that must succeed: resources.nodes for the trainer
    outcomes: tuple[ContainerOutcome, ...] = field(default_factory=tuple)

    @property
    def done(self) -> bool:
        """Succeeded: the Job says so, or (a second sooner, before the Job controller's next sync)
        the single pod of a one-pod Job exited 0."""
        return self.complete or (
            self.completions == 1
            and not self.failed_reason
            and any(o.exit_code == 0 and o.reason == "Completed" for o in self.outcomes)
        )

    def last_outcome(self) -> ContainerOutcome | None:
        return max(self.outcomes, key=lambda o: o.finished_at, default=None)

    def result_outcome(self) -> ContainerOutcome | None:
        """The outcome holding the run's result: in a multi-pod run, pod 0's (the others report only
        their rank's weights digest)."""
        with_artifacts = [o for o in self.outcomes if o.exit_code == 0 and "artifacts" in o.result()]
        return max(with_artifacts, key=lambda o: o.finished_at, default=None) or self.last_outcome()

    def last_failure(self) -> ContainerOutcome | None:
        failures = [o for o in self.outcomes if o.exit_code != 0]
        return max(failures, key=lambda o: o.finished_at, default=None)


@dataclass(frozen=True)
class Observed:
    trainer: ChildJob | None = None
    exporter: ChildJob | None = None


def observe(ftj: FineTuneJob, jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> Observed:
    """The trainer and export Jobs of a FineTuneJob, among its child Jobs and pods (from the indexes)."""
    by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        job_name = ((pod.get("metadata") or {}).get("labels") or {}).get(JOB_NAME_LABEL, "")
        by_job.setdefault(job_name, []).append(pod)
    found = {(j.get("metadata") or {}).get("name"): j for j in jobs}

    def one(name: str) -> ChildJob | None:
        return child_job(found[name], by_job.get(name, [])) if name in found else None

    return Observed(trainer=one(names.trainer_job_name(ftj)), exporter=one(names.export_job_name(ftj)))


def child_job(job: dict[str, Any], pods: list[dict[str, Any]]) -> ChildJob:
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return ChildJob(
        name=meta.get("name", ""),
        run_id=(meta.get("labels") or {}).get(names.RUN_ID_LABEL, ""),
        active=status.get("active") or 0,
        ready=status.get("ready") or 0,
        succeeded=status.get("succeeded") or 0,
        failed=status.get("failed") or 0,
        suspended="Suspended" in conditions,
        spec_suspend=bool((job.get("spec") or {}).get("suspend")),
        complete="Complete" in conditions,
        failed_reason=failed.get("reason") if failed else None,
        failed_message=failed.get("message") if failed else None,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        completions=int((job.get("spec") or {}).get("completions") or 1),
        outcomes=tuple(o for pod in pods if (o := container_outcome(pod)) is not None),
    )


def container_outcome(pod: dict[str, Any]) -> ContainerOutcome | None:
    component = ((pod.get("metadata") or {}).get("labels") or {}).get(names.COMPONENT_LABEL)
    status = pod.get("status") or {}
    disruption = next(
        (
            c.get("reason") or "DisruptionTarget"
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        "",
    )
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != component:
            continue
        terminated = (cs.get("state") or {}).get("terminated")
        if terminated:
            return ContainerOutcome(
                pod=pod["metadata"]["name"],
                exit_code=int(terminated.get("exitCode", 0)),
                reason=terminated.get("reason") or "",
                message=terminated.get("message") or "",
                finished_at=_timestamp(terminated.get("finishedAt")),
                disruption=disruption,
            )
    return None


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value or "")

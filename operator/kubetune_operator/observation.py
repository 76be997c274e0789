"""What the operator sees of a FineTuneJob's children, reduced to the facts its decisions need.

Built from raw Job and Pod objects (as dicts from the watch) by pure functions, so the same code
serves the Kopf indexes and the tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kubetune_api import FineTuneJob
from kubetune_operator.builders import names
from kubetune_operator.scheduling import Admission, Problem, admission, event_problem, pod_problem

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
    kind: str = "Job"  # or JobSet (a multi-node trainer)
    backoff_limit: int | None = None  # Job: spec.backoffLimit; JobSet: failurePolicy.maxRestarts
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None
    # Job: its pods, oldest first. A stopped pod is gone from the API soon after it exits, so the
    # operator counts replacements by the names it has seen (policies/preemption.py).
    pod_names: tuple[str, ...] = ()
    restarts: int = 0  # JobSet: group restarts so far
    counted_restarts: int = 0  # JobSet: those counted against maxRestarts (the others were checkpointed)
    # Set when the child is queued: its Kueue Workload (None until Kueue made one).
    admission: Admission | None = None
    # Why its pods do not run, when they don't.
    problem: Problem | None = None

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
    # The dry run's plan Job (spec.dryRun).
    planner: ChildJob | None = None
    # Whether the API server serves JobSets (multi-node runs need them).
    jobset_available: bool = True


@dataclass(frozen=True)
class Children:
    """A FineTuneJob's raw children, as the operator's indexes hold them."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    jobsets: list[dict[str, Any]] = field(default_factory=list)
    # Kueue Workloads and Events, by the name of the Job or JobSet they are about.
    workloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def observe(ftj: FineTuneJob, raw: Children, jobset_available: bool = True) -> Observed:
    """The trainer (a Job, or a JobSet for nodes > 1) and the export Job of a FineTuneJob."""
    by_label: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in raw.pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        for label in (JOB_NAME_LABEL, names.JOBSET_NAME_LABEL):
            if label in labels:
                by_label.setdefault((label, labels[label]), []).append(pod)
    jobs = {(j.get("metadata") or {}).get("name"): j for j in raw.jobs}
    jobsets = {(j.get("metadata") or {}).get("name"): j for j in raw.jobsets}

    def signals(child: ChildJob, event_sources: list[str]) -> ChildJob:
        workload = raw.workloads.get(child.name)
        events = [e for source in event_sources for e in raw.events.get(source, [])]
        pending = [p for n in event_sources for p in by_label.get((JOB_NAME_LABEL, n), [])]
        problem = None
        if not child.done and not child.failed_reason and not child.ready:
            problem = pod_problem(pending) or (event_problem(events) if not child.active else None)
        return replace(child, admission=admission(workload) if workload else None, problem=problem)

    trainer_name, export_name = names.trainer_job_name(ftj), names.export_job_name(ftj)
    trainer: ChildJob | None = None
    if trainer_name in jobsets:
        group_pods = by_label.get((names.JOBSET_NAME_LABEL, trainer_name), [])
        trainer = child_jobset(jobsets[trainer_name], group_pods)
        trainer = signals(trainer, [names.trainer_group_job_name(ftj)])
    elif trainer_name in jobs:
        trainer = child_job(jobs[trainer_name], by_label.get((JOB_NAME_LABEL, trainer_name), []))
        trainer = signals(trainer, [trainer_name])
    exporter = None
    if export_name in jobs:
        exporter = child_job(jobs[export_name], by_label.get((JOB_NAME_LABEL, export_name), []))
        exporter = signals(exporter, [export_name])
    plan_name = names.plan_job_name(ftj)
    planner = None
    if plan_name in jobs:
        planner = signals(
            child_job(jobs[plan_name], by_label.get((JOB_NAME_LABEL, plan_name), [])), [plan_name]
        )
    return Observed(trainer=trainer, exporter=exporter, planner=planner, jobset_available=jobset_available)


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
        pod_names=tuple(
            (p.get("metadata") or {}).get("name", "")
            for p in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        ),
        backoff_limit=(job.get("spec") or {}).get("backoffLimit"),
        active_deadline_seconds=(job.get("spec") or {}).get("activeDeadlineSeconds"),
        ttl_seconds_after_finished=(job.get("spec") or {}).get("ttlSecondsAfterFinished"),
    )


def child_jobset(jobset: dict[str, Any], pods: list[dict[str, Any]]) -> ChildJob:
    """A JobSet as one child: its group's pods of the current restart attempt only, so the outcomes
    of a group that was restarted do not count for the new one."""
    meta, spec, status = jobset.get("metadata") or {}, jobset.get("spec") or {}, jobset.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed, completed = conditions.get("Failed"), conditions.get("Completed")
    restarts = int(status.get("restarts") or 0)
    current = [p for p in pods if _labels(p).get(names.JOBSET_RESTART_LABEL, "0") == str(restarts)]
    groups = status.get("replicatedJobsStatus") or []
    completions = sum(
        int(((rj.get("template") or {}).get("spec") or {}).get("completions") or 1)
        * int(rj.get("replicas") or 1)
        for rj in spec.get("replicatedJobs") or []
    )
    started = [s for p in current if (s := ((p.get("status") or {}).get("startTime"))) is not None]
    return ChildJob(
        name=meta.get("name", ""),
        run_id=(meta.get("labels") or {}).get(names.RUN_ID_LABEL, ""),
        kind="JobSet",
        active=sum(
            1
            for p in current
            if (p.get("status") or {}).get("phase") in ("Pending", "Running")
            and not (p.get("metadata") or {}).get("deletionTimestamp")
        ),
        ready=sum(int(g.get("ready") or 0) for g in groups),
        succeeded=sum(int(g.get("succeeded") or 0) for g in groups),
        failed=sum(int(g.get("failed") or 0) for g in groups),
        suspended=bool(spec.get("suspend")),
        spec_suspend=bool(spec.get("suspend")),
        complete=completed is not None,
        failed_reason=failed.get("reason") if failed else None,
        failed_message=failed.get("message") if failed else None,
        start_time=_timestamp(min(started)) if started else None,
        completion_time=_timestamp((completed or failed or {}).get("lastTransitionTime")) or None,
        completions=completions,
        outcomes=tuple(o for pod in current if (o := container_outcome(pod)) is not None),
        backoff_limit=(spec.get("failurePolicy") or {}).get("maxRestarts"),
        restarts=restarts,
        counted_restarts=int(status.get("restartsCountTowardsMax") or 0),
        ttl_seconds_after_finished=spec.get("ttlSecondsAfterFinished"),
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


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _timestamp(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value or "")

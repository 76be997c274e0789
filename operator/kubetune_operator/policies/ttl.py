"""TTL after finished: a Succeeded or Failed FineTuneJob gets its completionTime, and is deleted once
spec.ttlSecondsAfterFinished has passed since then (unset: kept forever). Its Jobs get the operator's
ttlSecondsAfterFinished once the run has finished, and the run stays as recorded when they are gone."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from kubetune_api import FineTuneJob, Phase
from kubetune_operator.observation import Observed
from kubetune_operator.policies.decision import Action, Decision


def finish(ftj: FineTuneJob, decision: Decision, now: datetime) -> Decision:
    if not decision.finished:
        return decision
    # Kept once set: the Job's own completionTime arrives a sync later and must not move it. A failed
    # Job has none: the first pass that saw the failure sets it.
    completion = ftj.status.completion_time or decision.completion_time or now
    action = decision.action
    if expired(ftj.spec.ttl_seconds_after_finished, completion, now):
        action = Action.DELETE_FINETUNEJOB
    return replace(decision, completion_time=completion, action=action)


def expired(ttl_seconds: int | None, completion: datetime, now: datetime) -> bool:
    return ttl_seconds is not None and (now - completion).total_seconds() >= ttl_seconds


def job_patches(observed: Observed, ttl_seconds: int | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, name, patch) giving each child of a finished run the operator's ttlSecondsAfterFinished,
    so that Kubernetes cleans up its pods; set only then, because a Job that vanished while the run
    went on (a long export) would be taken for one never created."""
    if ttl_seconds is None:
        return []
    return [
        (child.kind, child.name, {"spec": {"ttlSecondsAfterFinished": ttl_seconds}})
        for child in (observed.trainer, observed.exporter, observed.planner)
        if child is not None and child.ttl_seconds_after_finished != ttl_seconds
    ]


def finished_and_cleaned_up(ftj: FineTuneJob, observed: Observed) -> bool:
    """A finished run whose Jobs are gone (their TTL, or a person) stays as its status records it. A
    failed one is retried by a spec edit (a new generation), as one whose Jobs remain is."""
    status = ftj.status
    children = (observed.trainer, observed.exporter, observed.planner)
    if any(child is not None for child in children) or status.run_id != ftj.spec_hash():
        return False
    if status.phase == Phase.SUCCEEDED:
        return True
    return status.phase == Phase.FAILED and status.observed_generation == ftj.metadata.generation

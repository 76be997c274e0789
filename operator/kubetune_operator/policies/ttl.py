"""TTL after finished: a Succeeded or Failed FineTuneJob gets its completionTime, and is deleted once
spec.ttlSecondsAfterFinished has passed since then (unset: kept forever)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kubetune_api import FineTuneJob
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

"""What keeps a child's pods from running, in the words of whoever refused them: Kueue (the
Workload's conditions), the scheduler (PodScheduled), a ResourceQuota or admission (the Job's
FailedCreate Event), or the kubelet (a container's waiting reason). Pure functions over raw objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A container waiting for one of these will not start by itself.
STUCK_CONTAINER_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Admission:
    """A queued child's Kueue Workload."""

    workload: str
    admitted: bool
    active: bool  # spec.active: false while the user has the FineTuneJob suspended
    reason: str  # Kueue's reason: Pending, Preempted, InadmissibleWorkload, ...
    message: str
    evaluated: bool = True  # Kueue has written its verdict (QuotaReserved or Evicted) on the Workload


@dataclass(frozen=True)
class Problem:
    reason: str  # Unschedulable, FailedCreate, CreateContainerConfigError, ...
    message: str


def admission(workload: dict[str, Any]) -> Admission:
    status = (workload.get("status") or {}).get("conditions") or []
    by_type = {c.get("type"): c for c in status}
    admitted = (by_type.get("Admitted") or {}).get("status") == "True"
    # After a preemption Kueue says why it evicted; otherwise why it reserves no quota yet.
    evicted = by_type.get("Evicted") if (by_type.get("Evicted") or {}).get("status") == "True" else None
    waiting = evicted or by_type.get("QuotaReserved") or {}
    return Admission(
        workload=(workload.get("metadata") or {}).get("name", ""),
        admitted=admitted,
        active=(workload.get("spec") or {}).get("active", True) is not False,
        reason=waiting.get("reason") or "Pending",
        message=waiting.get("message") or "waiting for Kueue to admit the workload",
        evaluated=admitted or bool(waiting),
    )


def pod_problem(pods: list[dict[str, Any]]) -> Problem | None:
    """The first pod that cannot be scheduled or whose container cannot start."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") not in (None, "Pending"):
            continue
        for c in status.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason"):
                return Problem(c["reason"], c.get("message") or c["reason"])
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_CONTAINER_REASONS:
                return Problem(waiting["reason"], waiting.get("message") or waiting["reason"])
    return None


def event_problem(events: list[dict[str, Any]]) -> Problem | None:
    """The latest FailedCreate of a Job: its pods were refused (ResourceQuota, admission)."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    latest = max(failed, key=_event_time)
    return Problem("FailedCreate", latest.get("message") or "pod creation failed")


def _event_time(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

"""What one pass decides: the phase, the conditions of both stages, the results, and the next action."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from kubetune_api import Artifact, ConditionStatus, Phase, PlanStatus
from kubetune_api.v1alpha1 import ExportTargetStatus


class Action(StrEnum):
    NONE = "none"
    CREATE_TRAINER = "createTrainer"
    CREATE_EXPORTER = "createExporter"
    CREATE_PLANNER = "createPlanner"  # spec.dryRun: the CPU-only plan Job
    DELETE_STALE = "deleteStale"  # children of an older spec revision
    DELETE_FINETUNEJOB = "deleteFineTuneJob"  # ttlSecondsAfterFinished passed
    STOP_UNFINISHED = "stopUnfinished"  # activeDeadlineSeconds passed: delete the unfinished child


class StageCondition(NamedTuple):
    """Status, reason and message of the Trained or Exported condition."""

    status: ConditionStatus
    reason: str
    message: str


NOT_STARTED = StageCondition(ConditionStatus.UNKNOWN, "Pending", "not started")


@dataclass(frozen=True)
class Stops:
    """This run's checkpointed stops, and what the operator remembers to count the next ones."""

    count: int = 0
    lost_checkpoints: int = 0
    trainer_pods: tuple[str, ...] = ()  # the trainer Job's pods at this pass
    trainer_pods_seen: int = 0  # every trainer pod of the run seen so far


@dataclass(frozen=True)
class Decision:
    phase: Phase
    reason: str
    message: str
    action: Action = Action.NONE
    trained: StageCondition = NOT_STARTED
    exported: StageCondition = NOT_STARTED
    # Optional conditions: Admitted (queued jobs), PodsReady (pods that cannot run).
    admitted: StageCondition | None = None
    pods_ready: StageCondition | None = None
    backoff_limit_applied: StageCondition | None = None
    # Dry runs: the Planned condition, and the plan the plan pod reported.
    planned: StageCondition | None = None
    plan: PlanStatus | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    export_targets: list[ExportTargetStatus] = field(default_factory=list)
    # The trainer Job's startTime; the status keeps the first one of a run.
    start_time: datetime | None = None
    # Checkpointed stops of this run so far (policies/preemption.py).
    stops: Stops = field(default_factory=lambda: Stops())
    # Of a finished run: the finishing Job's completionTime (a failed Job has none), then the TTL
    # policy's final value.
    completion_time: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED)


def parse_time(value: str | None) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339, `Z` for UTC) as a datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

"""FineTuneSweep status: the trials, their outcomes and the best one. Only the operator writes it;
lenient, so an older operator can read what a newer one wrote."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from kubetune_api.base import LenientModel
from kubetune_api.status import Artifact, Condition

MAX_TRIALS = 100


class SweepPhase(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TrialPhase(StrEnum):
    """Pending: not created yet; Running: created and unfinished (queued, training, exporting, suspended
    by someone else); EarlyStopped: suspended by the sweep's early stopping."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EARLY_STOPPED = "EarlyStopped"


FINISHED_TRIAL_PHASES = frozenset({TrialPhase.SUCCEEDED, TrialPhase.FAILED, TrialPhase.EARLY_STOPPED})


class TrialStatus(LenientModel):
    """One trial: its FineTuneJob, parameters and outcome."""

    name: str = Field(max_length=63, description="The trial's FineTuneJob.")
    parameters: dict[str, float] = Field(default_factory=dict, description="The values of this trial.")
    phase: TrialPhase = Field(description="Pending, Running, Succeeded, Failed or EarlyStopped.")
    metric: float | None = Field(
        default=None,
        description="The objective: the final value of a succeeded trial, else the latest live one.",
    )
    early_stopped: bool | None = Field(default=None, description="True when early stopping suspended it.")


class BestTrial(LenientModel):
    """The succeeded trial with the best final metric (ties: the lowest index)."""

    name: str = Field(max_length=63, description="The trial's FineTuneJob.")
    parameters: dict[str, float] = Field(default_factory=dict, description="Its parameter values.")
    metric: float = Field(description="Its final objective metric.")
    artifacts: list[Artifact] = Field(
        default_factory=list, max_length=64, description="Its artifacts (the trial's status.artifacts)."
    )


class FineTuneSweepStatus(LenientModel):
    """Observed state of a FineTuneSweep; only the operator writes it."""

    phase: SweepPhase | None = Field(default=None, description="Running, Succeeded or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Ready, Reconciling and Stalled.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    trials: list[TrialStatus] = Field(
        default_factory=list, max_length=MAX_TRIALS, description="Every trial, in index order."
    )
    trials_total: int | None = Field(default=None, ge=0, description="Trials the sweep runs.")
    trials_done: int | None = Field(
        default=None, ge=0, description="Finished trials (succeeded, failed or early stopped)."
    )
    trials_running: int | None = Field(default=None, ge=0, description="Created, unfinished trials.")
    trials_succeeded: int | None = Field(default=None, ge=0, description="Succeeded trials.")
    trials_failed: int | None = Field(default=None, ge=0, description="Failed trials.")
    trials_early_stopped: int | None = Field(default=None, ge=0, description="Early-stopped trials.")
    best_trial: BestTrial | None = Field(default=None, description="The best succeeded trial so far.")
    completion_time: datetime | None = Field(default=None, description="When the sweep finished.")
    message: str | None = Field(default=None, max_length=32768, description="Human-readable summary.")

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

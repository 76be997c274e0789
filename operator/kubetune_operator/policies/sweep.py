"""The sweep policy: from the trials planned and the trial FineTuneJobs observed, which trials to create
next (within parallelism), which to stop early, the best trial, the phase, and the status to write.

Pure. Every trial's phase is read from its FineTuneJob (its status.phase, and the early-stop mark the
sweep set with spec.suspend), never from what an earlier pass did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubetune_api import Artifact, Condition, ConditionStatus, ConditionType, FineTuneJobStatus, Phase
from kubetune_api.sweep import (
    FINISHED_TRIAL_PHASES,
    BestTrial,
    FineTuneSweep,
    FineTuneSweepStatus,
    SweepPhase,
    TrialPhase,
    TrialStatus,
)
from kubetune_operator.builders.sweep import EARLY_STOPPED_ANNOTATION, Trial

T, F = ConditionStatus.TRUE, ConditionStatus.FALSE


@dataclass(frozen=True)
class TrialChild:
    """What the sweep reads from one trial FineTuneJob."""

    name: str
    phase: Phase | None = None
    suspended: bool = False
    early_stopped: bool = False
    progress_percent: int | None = None
    live_metrics: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    artifacts: tuple[Artifact, ...] = ()


def trial_child(raw: Mapping[str, Any]) -> TrialChild:
    """A trial FineTuneJob as the API returns it (a plain dict)."""
    meta = raw.get("metadata") or {}
    try:
        status = FineTuneJobStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        status = FineTuneJobStatus()  # a status we cannot read is an unfinished trial
    progress = status.progress
    return TrialChild(
        name=str(meta.get("name")),
        phase=status.phase,
        suspended=bool((raw.get("spec") or {}).get("suspend")),
        early_stopped=EARLY_STOPPED_ANNOTATION in (meta.get("annotations") or {}),
        progress_percent=progress.progress_percentage if progress else None,
        live_metrics=dict(progress.metrics) if progress else {},
        metrics=dict(status.metrics),
        artifacts=tuple(status.artifacts),
    )


def trial_phase(child: TrialChild | None) -> TrialPhase:
    if child is None:
        return TrialPhase.PENDING
    if child.phase == Phase.SUCCEEDED:
        return TrialPhase.SUCCEEDED
    if child.phase == Phase.FAILED:
        return TrialPhase.FAILED
    if child.early_stopped:
        return TrialPhase.EARLY_STOPPED
    return TrialPhase.RUNNING


@dataclass(frozen=True)
class Stop:
    name: str
    message: str


@dataclass(frozen=True)
class SweepDecision:
    phase: SweepPhase
    reason: str
    message: str
    trials: list[TrialStatus]
    create: list[Trial] = field(default_factory=list)
    stop: list[Stop] = field(default_factory=list)
    best: BestTrial | None = None

    @property
    def finished(self) -> bool:
        return self.phase != SweepPhase.RUNNING


def best_trial(
    sweep: FineTuneSweep, planned: list[Trial], children: Mapping[str, TrialChild]
) -> BestTrial | None:
    """The succeeded trial with the best final metric; on a tie, the lowest index."""
    objective = sweep.spec.objective
    best: BestTrial | None = None
    for trial in planned:
        child = children.get(trial.name)
        if child is None or trial_phase(child) != TrialPhase.SUCCEEDED:
            continue
        value = child.metrics.get(objective.metric)
        if value is None:
            continue
        if best is None or objective.better(value, best.metric):
            best = BestTrial(
                name=trial.name, parameters=trial.parameters, metric=value, artifacts=list(child.artifacts)
            )
    return best


def to_stop(
    sweep: FineTuneSweep, planned: list[Trial], children: Mapping[str, TrialChild], best: BestTrial | None
) -> list[Stop]:
    """Running trials past minProgressPercent whose live metric is worse than the best final one."""
    rule = sweep.spec.early_stopping
    objective = sweep.spec.objective
    if rule is None or best is None:
        return []
    out = []
    for trial in planned:
        child = children.get(trial.name)
        if child is None or trial_phase(child) != TrialPhase.RUNNING or child.suspended:
            continue
        live = child.live_metrics.get(objective.metric)
        if live is None or (child.progress_percent or 0) < rule.min_progress_percent:
            continue
        if objective.better(best.metric, live):
            out.append(
                Stop(
                    trial.name,
                    f"{objective.metric} {live:g} at {child.progress_percent}% cannot beat "
                    f"{best.name}'s {best.metric:g}",
                )
            )
    return out


def decide(
    sweep: FineTuneSweep, planned: list[Trial], children: Mapping[str, TrialChild], invalid: str | None = None
) -> SweepDecision:
    """The pass's decision. `invalid`: why the sweep cannot run (nothing is created then)."""
    objective = sweep.spec.objective
    if invalid is not None:
        statuses = [_trial_status(t, children.get(t.name), objective.metric) for t in planned]
        return SweepDecision(SweepPhase.FAILED, "InvalidSpec", invalid, statuses)

    best = best_trial(sweep, planned, children)
    stops = to_stop(sweep, planned, children, best)
    stopping = {s.name for s in stops}
    phases = {t.name: trial_phase(children.get(t.name)) for t in planned}
    phases.update({name: TrialPhase.EARLY_STOPPED for name in stopping})
    running = sum(1 for p in phases.values() if p == TrialPhase.RUNNING)
    pending = [t for t in planned if phases[t.name] == TrialPhase.PENDING]
    create = pending[: max(0, sweep.spec.parallelism - running)]
    phases.update({t.name: TrialPhase.RUNNING for t in create})

    statuses = [_trial_status(t, children.get(t.name), objective.metric, phases[t.name]) for t in planned]
    done = sum(1 for p in phases.values() if p in FINISHED_TRIAL_PHASES)
    summary = f"{done} of {len(planned)} trials done"
    best_text = f"; best {best.name} ({objective.metric} {best.metric:g})" if best else ""
    if done < len(planned):
        return SweepDecision(
            SweepPhase.RUNNING, "TrialsRunning", summary + best_text, statuses, create, stops, best
        )
    # A stop that finishes the last running trial is still carried out: the status says EarlyStopped
    # only for a trial that this pass suspends.
    if best is not None:
        return SweepDecision(
            SweepPhase.SUCCEEDED, "Succeeded", summary + best_text, statuses, [], stops, best
        )
    succeeded = sum(1 for p in phases.values() if p == TrialPhase.SUCCEEDED)
    if succeeded:
        message = f"{summary}; no succeeded trial reported {objective.metric}"
        return SweepDecision(SweepPhase.FAILED, "ObjectiveMissing", message, statuses)
    return SweepDecision(SweepPhase.FAILED, "NoTrialSucceeded", f"{summary}; none succeeded", statuses)


def _trial_status(
    trial: Trial, child: TrialChild | None, metric: str, phase: TrialPhase | None = None
) -> TrialStatus:
    phase = phase or trial_phase(child)
    value = None
    if child is not None:
        value = child.metrics.get(metric) if phase == TrialPhase.SUCCEEDED else child.live_metrics.get(metric)
    return TrialStatus(
        name=trial.name,
        parameters=trial.parameters,
        phase=phase,
        metric=value,
        early_stopped=True if phase == TrialPhase.EARLY_STOPPED else None,
    )


def sweep_status(sweep: FineTuneSweep, decision: SweepDecision, now: datetime) -> FineTuneSweepStatus:
    """The status the sweep should have after this pass."""
    old = sweep.status
    generation = sweep.metadata.generation
    phase = decision.phase

    def condition(type_: ConditionType, status: ConditionStatus) -> Condition:
        return transition(old, generation, now, type_, status, decision.reason, decision.message)

    counts = {p: sum(1 for t in decision.trials if t.phase == p) for p in TrialPhase}
    return FineTuneSweepStatus(
        phase=phase,
        conditions=[
            condition(ConditionType.READY, T if phase == SweepPhase.SUCCEEDED else F),
            condition(ConditionType.RECONCILING, T if phase == SweepPhase.RUNNING else F),
            condition(ConditionType.STALLED, T if phase == SweepPhase.FAILED else F),
        ],
        observed_generation=generation,
        trials=decision.trials,
        trials_total=len(decision.trials),
        trials_done=sum(counts[p] for p in FINISHED_TRIAL_PHASES),
        trials_running=counts[TrialPhase.RUNNING],
        trials_succeeded=counts[TrialPhase.SUCCEEDED],
        trials_failed=counts[TrialPhase.FAILED],
        trials_early_stopped=counts[TrialPhase.EARLY_STOPPED],
        best_trial=decision.best,
        completion_time=(old.completion_time or now) if decision.finished else None,
        message=decision.message,
    )


def transition(
    old: FineTuneSweepStatus,
    generation: int | None,
    now: datetime,
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status flips."""
    previous = old.condition(type_.value)
    flipped = previous is None or previous.status != status
    return Condition(
        type=type_.value,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if flipped or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )


def invalid_sweep_status(
    old: FineTuneSweepStatus, generation: int | None, message: str, now: datetime
) -> FineTuneSweepStatus:
    """A sweep that cannot run: Failed and Stalled with reason InvalidSpec; no trial is created."""

    def condition(type_: ConditionType, status: ConditionStatus) -> Condition:
        return transition(old, generation, now, type_, status, "InvalidSpec", message)

    return old.model_copy(
        update={
            "phase": SweepPhase.FAILED,
            "conditions": [
                condition(ConditionType.READY, F),
                condition(ConditionType.RECONCILING, F),
                condition(ConditionType.STALLED, T),
            ],
            "observed_generation": generation,
            "message": message,
        }
    )

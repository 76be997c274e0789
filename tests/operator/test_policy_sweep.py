"""The sweep policy, table-tested: which trials to create within parallelism, which to stop early, the
best trial, the phase, and the status written from the decision."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_sweep_builders import sweep, sweep_obj

from kubetune_api import Artifact, Phase
from kubetune_api.sweep import FineTuneSweep, SweepPhase, TrialPhase
from kubetune_operator.builders import sweep as builder
from kubetune_operator.policies import sweep as policy
from kubetune_operator.policies.sweep import TrialChild

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
MANIFEST = Artifact(kind="manifest", uri="s3://b/runs/ns/s-1/abc/manifest.json", sha256="0" * 64)


def done(name: str, loss: float | None, phase: Phase = Phase.SUCCEEDED) -> TrialChild:
    metrics = {} if loss is None else {"evalLoss": loss}
    artifacts = (MANIFEST,) if name.endswith("-1") else ()
    return TrialChild(name, phase=phase, metrics=metrics, artifacts=artifacts)


def running(name: str, percent: int | None = None, live: float | None = None, **kw: Any) -> TrialChild:
    live_metrics = {} if live is None else {"evalLoss": live}
    return TrialChild(name, phase=Phase.TRAINING, progress_percent=percent, live_metrics=live_metrics, **kw)


EARLY = {"earlyStopping": {"minProgressPercent": 50}}


@dataclass(frozen=True)
class Case:
    id: str
    children: list[TrialChild]
    phase: SweepPhase
    create: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    best: str | None = None
    reason: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("new sweep: the first two", [], SweepPhase.RUNNING, create=["s-0", "s-1"], reason="TrialsRunning"),
    Case("parallelism 3", [], SweepPhase.RUNNING, create=["s-0", "s-1", "s-2"], spec={"parallelism": 3}),
    Case("two running: none more", [running("s-0"), running("s-1")], SweepPhase.RUNNING),
    Case(
        "one finished frees a slot",
        [done("s-0", 2.0), running("s-1")],
        SweepPhase.RUNNING,
        create=["s-2"],
        best="s-0",
    ),
    Case(
        "a failed trial frees a slot too",
        [done("s-0", None, Phase.FAILED), running("s-1")],
        SweepPhase.RUNNING,
        create=["s-2"],
    ),
    Case(
        "a suspended trial (not by us) holds its slot",
        [TrialChild("s-0", phase=Phase.SUSPENDED, suspended=True), running("s-1")],
        SweepPhase.RUNNING,
    ),
    Case(
        "all succeeded: lowest loss wins",
        [done("s-0", 2.0), done("s-1", 1.5), done("s-2", 1.7), done("s-3", 1.9)],
        SweepPhase.SUCCEEDED,
        best="s-1",
        reason="Succeeded",
    ),
    Case(
        "maximize picks the highest",
        [
            TrialChild("s-0", phase=Phase.SUCCEEDED, metrics={"evalExactMatch": 0.5}),
            TrialChild("s-1", phase=Phase.SUCCEEDED, metrics={"evalExactMatch": 0.9}),
        ],
        SweepPhase.SUCCEEDED,
        best="s-1",
        spec={
            "maxTrials": 2,
            "objective": {"metric": "evalExactMatch", "direction": "maximize"},
            "evaluation": {"metrics": ["exactMatch"]},
        },
    ),
    Case(
        "a tie goes to the lowest index",
        [done("s-0", 1.5), done("s-1", 1.5), done("s-2", 1.5), done("s-3", 1.5)],
        SweepPhase.SUCCEEDED,
        best="s-0",
    ),
    Case(
        "one failed, the others decide",
        [done("s-0", None, Phase.FAILED), done("s-1", 1.5), done("s-2", 1.7), done("s-3", 1.9)],
        SweepPhase.SUCCEEDED,
        best="s-1",
    ),
    Case(
        "every trial failed",
        [done(f"s-{i}", None, Phase.FAILED) for i in range(4)],
        SweepPhase.FAILED,
        reason="NoTrialSucceeded",
    ),
    Case(
        "succeeded without the objective metric",
        [done(f"s-{i}", None) for i in range(4)],
        SweepPhase.FAILED,
        reason="ObjectiveMissing",
    ),
    Case(
        "early stopping: worse past the threshold",
        [done("s-0", 1.0), running("s-1", 60, 1.4), running("s-2", 60, 0.9)],
        SweepPhase.RUNNING,
        stop=["s-1"],
        create=["s-3"],
        best="s-0",
        spec=EARLY,
    ),
    Case(
        "stopping the last running trial finishes the sweep, and the stop is still made",
        [done("s-0", 1.0), done("s-1", 1.2), done("s-2", 1.1), running("s-3", 60, 1.4)],
        SweepPhase.SUCCEEDED,
        stop=["s-3"],
        best="s-0",
        reason="Succeeded",
        spec=EARLY,
    ),
    Case(
        "early stopping waits for minProgressPercent",
        [done("s-0", 1.0), running("s-1", 40, 1.4), running("s-2")],
        SweepPhase.RUNNING,
        best="s-0",
        spec=EARLY,
    ),
    Case(
        "early stopping needs a live metric",
        [done("s-0", 1.0), running("s-1", 90), running("s-2")],
        SweepPhase.RUNNING,
        best="s-0",
        spec=EARLY,
    ),
    Case(
        "early stopping needs a finished best trial",
        [running("s-0", 90, 3.0), running("s-1", 90, 2.0)],
        SweepPhase.RUNNING,
        spec=EARLY,
    ),
    Case(
        "an equal live metric may still win",
        [done("s-0", 1.0), running("s-1", 90, 1.0), running("s-2")],
        SweepPhase.RUNNING,
        best="s-0",
        spec=EARLY,
    ),
    Case(
        "without earlyStopping nothing is stopped",
        [done("s-0", 1.0), running("s-1", 90, 5.0), running("s-2")],
        SweepPhase.RUNNING,
        best="s-0",
        spec={"earlyStopping": None},
    ),
    Case(
        "an early-stopped trial is finished and is never the best",
        [
            done("s-0", 1.0),
            running("s-1", 60, 0.5, suspended=True, early_stopped=True),
            done("s-2", 1.2),
            done("s-3", 1.1),
        ],
        SweepPhase.SUCCEEDED,
        best="s-0",
        spec=EARLY,
    ),
    Case(
        "a trial that succeeded before its stop took effect counts",
        [
            done("s-0", 1.0),
            TrialChild("s-1", phase=Phase.SUCCEEDED, early_stopped=True, metrics={"evalLoss": 0.8}),
            done("s-2", 1.2),
            done("s-3", 1.1),
        ],
        SweepPhase.SUCCEEDED,
        best="s-1",
        spec=EARLY,
    ),
]


def named(spec: dict[str, Any]) -> FineTuneSweep:
    """The example sweep, named `s`; an `evaluation` entry goes to the template's spec."""
    spec = dict(spec)
    evaluation = spec.pop("evaluation", None)
    s = sweep(**spec) if evaluation is None else _with_evaluation(spec, evaluation)
    return s.model_copy(update={"metadata": s.metadata.model_copy(update={"name": "s"})})


def _with_evaluation(spec: dict[str, Any], evaluation: dict[str, Any]) -> FineTuneSweep:
    obj = sweep_obj(**spec)
    obj["spec"]["template"]["spec"]["evaluation"] = evaluation
    return FineTuneSweep.from_k8s(obj)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_decide(case: Case) -> None:
    s = named(case.spec)
    planned = builder.trials(s)
    decision = policy.decide(s, planned, {c.name: c for c in case.children})
    assert decision.phase == case.phase
    assert [t.name for t in decision.create] == case.create
    assert [stop.name for stop in decision.stop] == case.stop
    assert (decision.best.name if decision.best else None) == case.best
    if case.reason:
        assert decision.reason == case.reason
    # What is created or stopped this pass shows in this pass's status.
    phases = {t.name: t.phase for t in decision.trials}
    assert all(phases[name] == TrialPhase.RUNNING for name in case.create)
    assert all(phases[name] == TrialPhase.EARLY_STOPPED for name in case.stop)
    unfinished = sum(1 for p in phases.values() if p == TrialPhase.RUNNING)
    assert unfinished <= s.spec.parallelism or not case.create


def test_best_trial_carries_the_childs_artifacts_and_parameters() -> None:
    s = named({})
    children = {c.name: c for c in [done("s-0", 2.0), done("s-1", 1.0), done("s-2", 3.0), done("s-3", 4.0)]}
    best = policy.decide(s, builder.trials(s), children).best
    assert best is not None
    assert best.artifacts == [MANIFEST]
    assert best.parameters == {"training.learningRate": 0.0001, "lora.r": 8.0}


def test_invalid_creates_nothing_and_fails() -> None:
    s = named({})
    decision = policy.decide(s, builder.trials(s), {}, invalid="invalid trial s-1: bad")
    assert (decision.phase, decision.reason, decision.create) == (SweepPhase.FAILED, "InvalidSpec", [])
    status = policy.sweep_status(s, decision, NOW)
    conditions = {c.type: (c.status.value, c.reason) for c in status.conditions}
    assert conditions["Stalled"] == ("True", "InvalidSpec") and conditions["Ready"][0] == "False"


def test_status_counts_conditions_and_trials() -> None:
    s = named(EARLY)
    children = [done("s-0", 1.0), running("s-1", 60, 1.4), done("s-2", None, Phase.FAILED)]
    decision = policy.decide(s, builder.trials(s), {c.name: c for c in children})
    status = policy.sweep_status(s, decision, NOW)
    assert status.phase == SweepPhase.RUNNING
    assert (status.trials_total, status.trials_done, status.trials_running) == (4, 3, 1)
    assert (status.trials_succeeded, status.trials_failed, status.trials_early_stopped) == (1, 1, 1)
    by_name = {t.name: t for t in status.trials}
    assert by_name["s-1"].early_stopped is True and by_name["s-1"].metric == 1.4
    assert by_name["s-0"].metric == 1.0 and by_name["s-3"].phase == TrialPhase.RUNNING
    assert {c.type: c.status.value for c in status.conditions} == {
        "Ready": "False",
        "Reconciling": "True",
        "Stalled": "False",
    }
    assert status.completion_time is None and status.best_trial is not None


def test_condition_times_move_only_on_a_flip() -> None:
    s = named({})
    first = policy.sweep_status(s, policy.decide(s, builder.trials(s), {}), NOW)
    later = NOW + dt.timedelta(minutes=5)
    again = policy.sweep_status(
        s.model_copy(update={"status": first}), policy.decide(s, builder.trials(s), {}), later
    )
    assert [c.last_transition_time for c in again.conditions] == [NOW, NOW, NOW]


def test_trial_child_reads_a_finetunejob() -> None:
    raw = {
        "metadata": {"name": "s-1", "annotations": {builder.EARLY_STOPPED_ANNOTATION: "worse"}},
        "spec": {"suspend": True},
        "status": {
            "phase": "Suspended",
            "progress": {"progressPercentage": 60, "metrics": {"evalLoss": 1.4}},
            "metrics": {},
            "artifacts": [MANIFEST.to_k8s()],
        },
    }
    child = policy.trial_child(raw)
    assert child == TrialChild(
        "s-1",
        phase=Phase.SUSPENDED,
        suspended=True,
        early_stopped=True,
        progress_percent=60,
        live_metrics={"evalLoss": 1.4},
        metrics={},
        artifacts=(MANIFEST,),
    )
    assert policy.trial_phase(child) == TrialPhase.EARLY_STOPPED
    assert policy.trial_phase(policy.trial_child({"metadata": {"name": "s-2"}})) == TrialPhase.RUNNING
    assert policy.trial_phase(None) == TrialPhase.PENDING

"""The quality gate: each export target's figures held to export.gate's minimums before promotion.

Pure: figures in, verdict out. A metric the gate names that was not measured is a failure (never a
pass by default); the CEL rules refuse such specs, so here it means the rows were missing."""

from __future__ import annotations

from kubetune_api.manifest import GateRecord
from kubetune_api.v1alpha1 import GateResult, GateRule
from kubetune_trainer.quality import with_prefix


def judge(rules: list[GateRule], metrics: dict[str, float], with_adapter: bool) -> GateRecord:
    """The target's verdict; with a swappable adapter the base+adapter pair is held to each rule too."""
    if not rules:
        return GateRecord(result=GateResult.NONE)
    failures = []
    for rule in rules:
        names = [rule.metric] + (
            [next(iter(with_prefix("adapter", {rule.metric: 0.0})))] if with_adapter else []
        )
        for name in names:
            value = metrics.get(name)
            if value is None:
                failures.append(f"{name} was not measured (no held-out rows were answered)")
            elif value < rule.min:
                failures.append(f"{name} {value:.3f} < {rule.min:g}")
    return GateRecord(result=GateResult.FAILED if failures else GateResult.PASSED, failures=failures)


def overall(verdicts: dict[str, GateRecord]) -> GateRecord:
    """The run's verdict: Failed if any target failed (each failure named with its target)."""
    if all(v.result == GateResult.NONE for v in verdicts.values()):
        return GateRecord(result=GateResult.NONE)
    failures = [f"{target}: {failure}" for target, v in verdicts.items() for failure in v.failures]
    return GateRecord(result=GateResult.FAILED if failures else GateResult.PASSED, failures=failures)

"""FineTuneSweep handlers: one pass on a short timer, and at once when one of its trials changes."""

from __future__ import annotations

from functools import cache
from typing import Any

import kopf

from kubetune_api import GROUP, PLURAL, VERSION
from kubetune_api.sweep import SWEEP_PLURAL
from kubetune_operator.builders.sweep import SWEEP_LABEL
from kubetune_operator.runtime import runtime
from kubetune_operator.services.sweeps import SweepService
from kubetune_operator.settings import OperatorSettings


@cache
def sweeps() -> SweepService:
    return SweepService(runtime().api)


@kopf.timer(
    GROUP, VERSION, SWEEP_PLURAL, interval=OperatorSettings.from_env().resync_seconds, initial_delay=0
)
def reconcile(namespace: str | None, name: str | None, **_: Any) -> None:
    if namespace and name:
        reconcile_one(namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL, labels={SWEEP_LABEL: kopf.PRESENT})
def trial_changed(namespace: str | None, labels: kopf.Labels, type: str | None, **_: Any) -> None:
    """React to a trial's change at once; the timer stays the safety net."""
    name = labels.get(SWEEP_LABEL)
    if name and namespace and type is not None:
        reconcile_one(namespace, name)


def reconcile_one(namespace: str, name: str) -> None:
    """One pass over the sweep as it is now, read fresh under its own lock (the timer and a trial's
    event may fire together)."""
    with runtime().pass_lock(namespace, f"{SWEEP_PLURAL}/{name}"):
        raw = runtime().get_custom_object(SWEEP_PLURAL, namespace, name)
        if raw is None:
            return
        result = sweeps().reconcile(raw)
        body = kopf.Body(raw)  # type: ignore[arg-type]
        for event in result.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)

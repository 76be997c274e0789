"""The one writer of a FineTuneSweep's status: one merge patch of the status subresource per pass,
skipped when nothing but timestamps changed (as services/status_writer.py does for FineTuneJobs)."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubetune_api import ObjectMeta
from kubetune_api.sweep import SWEEP_PLURAL, FineTuneSweepStatus
from kubetune_operator.services.status_writer import send_status_patch, without_times


class SweepStatusWriter:
    def __init__(self, custom: client.CustomObjectsApi) -> None:
        self.custom = custom

    def write(self, meta: ObjectMeta, current: FineTuneSweepStatus, new: FineTuneSweepStatus) -> bool:
        """Patch the status from `current` to `new`; False when there was nothing to write."""
        body = patch(current, new)
        if body is None:
            return False
        send_status_patch(self.custom, SWEEP_PLURAL, meta, body)
        return True


def patch(current: FineTuneSweepStatus, new: FineTuneSweepStatus) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `new` (unset fields as null, which removes them), or
    None when only timestamps would change. bestTrial is sent whole: a merge patch would otherwise keep
    the parameters of a previous best trial that the new one does not have."""
    before, after = _dump(current), _dump(new)
    if without_times(before) == without_times(after):
        return None
    body = dict(after)
    if current.best_trial is not None and new.best_trial is not None:
        stale = {k: None for k in current.best_trial.parameters if k not in new.best_trial.parameters}
        body["bestTrial"] = {
            **after["bestTrial"],
            "parameters": {**stale, **after["bestTrial"]["parameters"]},
        }
    return body


def _dump(status: FineTuneSweepStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True)

"""The one writer of the operator's part of a FineTuneJob's status: one merge patch of the status
subresource per pass, skipped when nothing but timestamps changed.

The status has two writers with separate fields (kubetune_api.FineTuneJobStatus): the trainer owns
TRAINER_FIELDS (progress, lastCheckpoint), the operator everything else. The operator only ever sends
its own fields, except to clear the trainer's when they belong to another run.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kubetune_api import GROUP, PLURAL, VERSION, FineTuneJobStatus, ObjectMeta

MERGE_PATCH = "application/merge-patch+json"


class StatusWriter:
    def __init__(self, custom: client.CustomObjectsApi) -> None:
        self.custom = custom

    def write(
        self,
        meta: ObjectMeta,
        current: FineTuneJobStatus,
        new: FineTuneJobStatus,
        clear_trainer_fields: bool,
    ) -> bool:
        """Patch the status from `current` to `new`; False when there was nothing to write."""
        body = patch(current, new, clear_trainer_fields)
        if body is None:
            return False
        send_status_patch(self.custom, PLURAL, meta, body)
        return True


def send_status_patch(
    custom: client.CustomObjectsApi, plural: str, meta: ObjectMeta, body: dict[str, Any]
) -> None:
    """One merge patch of a kubetune.dev object's status subresource."""
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        str(meta.namespace),
        plural,
        str(meta.name),
        {"status": body},
        _content_type=MERGE_PATCH,
    )


def patch(
    current: FineTuneJobStatus, new: FineTuneJobStatus, clear_trainer_fields: bool
) -> dict[str, Any] | None:
    """The merge patch of the status that turns `current` into `new`, or None when only timestamps
    would change. Unset fields are sent as null, which a merge patch removes (completionTime after a
    new revision); so are the metrics keys `new` no longer has, since a merge patch only removes a
    map's keys one by one."""
    before, after = current.operator_fields(), new.operator_fields()
    reported = any(getattr(current, name) is not None for name in FineTuneJobStatus.TRAINER_FIELDS)
    clearing = clear_trainer_fields and reported
    if not clearing and without_times(before) == without_times(after):
        return None
    body = dict(after)
    body["metrics"] = {**{k: None for k in current.metrics if k not in new.metrics}, **after["metrics"]}
    if clear_trainer_fields:
        body.update({_alias(name): None for name in FineTuneJobStatus.TRAINER_FIELDS})
    return body


def _alias(name: str) -> str:
    return FineTuneJobStatus.model_fields[name].alias or name


def without_times(status: dict[str, Any]) -> dict[str, Any]:
    """Status compared for change; a transition time alone is no reason to write."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions") or []
    ]
    return out

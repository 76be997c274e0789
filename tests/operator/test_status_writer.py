"""services/status_writer.py: the one writer of the operator's part of the status. One merge patch,
only when something but a timestamp changed; the trainer's fields only ever cleared."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from child_cases import NOW, T_COMPLETE, T_RUNNING, checkpoint_of, observed
from operator_cases import NAMESPACE, set_, tiny

from kubetune_api import FineTuneJobStatus, ObjectMeta
from kubetune_operator.policies.decide import decide
from kubetune_operator.services.status_writer import StatusWriter, patch
from kubetune_operator.status import invalid_spec_status, new_status

Obj = dict[str, Any]


class FakeCustomObjects:
    def __init__(self) -> None:
        self.patches: list[tuple[tuple[Any, ...], Obj]] = []

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        self.patches.append((args, kwargs))


def writer() -> tuple[StatusWriter, FakeCustomObjects]:
    fake = FakeCustomObjects()
    return StatusWriter(fake), fake  # type: ignore[arg-type]


def status(data: Obj) -> FineTuneJobStatus:
    return FineTuneJobStatus.model_validate(data)


def pass_status(old: Obj, trainer: Any = T_RUNNING) -> tuple[FineTuneJobStatus, FineTuneJobStatus]:
    ftj = tiny(set_("status", old))
    new = new_status(ftj, decide(ftj, observed(ftj, trainer, None), NOW), NOW)
    return ftj.status, new


def test_one_merge_patch_of_the_status_subresource() -> None:
    out, fake = writer()
    current, new = pass_status({})
    meta = ObjectMeta(name="tiny", namespace=NAMESPACE)
    assert out.write(meta, current, new, clear_trainer_fields=False) is True
    [(args, kwargs)] = fake.patches
    assert args == (
        "kubetune.dev",
        "v1alpha1",
        NAMESPACE,
        "finetunejobs",
        "tiny",
        {"status": new.operator_fields()},
    )
    assert kwargs == {"_content_type": "application/merge-patch+json"}


def test_nothing_is_written_when_nothing_changed() -> None:
    out, fake = writer()
    _, first = pass_status({})
    again = first.model_dump(mode="json", by_alias=True)
    current, new = pass_status(again)
    assert out.write(ObjectMeta(name="tiny"), current, new, clear_trainer_fields=False) is False
    assert fake.patches == []


def test_a_transition_time_alone_is_no_reason_to_write() -> None:
    current, _ = pass_status({})
    _, new = pass_status({})
    moved = new.model_copy(
        update={
            "conditions": [
                c.model_copy(update={"last_transition_time": NOW + timedelta(1)}) for c in new.conditions
            ]
        }
    )
    assert patch(new, moved, clear_trainer_fields=False) is None
    assert patch(current, new, clear_trainer_fields=False) is not None


def test_the_trainers_fields_are_never_sent_unless_cleared() -> None:
    ftj = tiny()
    reported = {"runId": ftj.spec_hash(), "progress": {"step": 3}, "lastCheckpoint": checkpoint_of(ftj, 2)}
    current, new = pass_status(reported)
    body = patch(current, new, clear_trainer_fields=False)
    assert body is not None
    assert not FineTuneJobStatus.TRAINER_FIELDS & set(body) and not {"progress", "lastCheckpoint"} & set(body)


@pytest.mark.parametrize(
    ("current", "cleared_body"),
    [
        ({"progress": {"step": 3}}, {"progress": None, "lastCheckpoint": None}),
        ({}, None),  # nothing to clear, nothing else changed
    ],
    ids=["reported", "nothing-reported"],
)
def test_clearing_the_trainers_fields(current: Obj, cleared_body: Obj | None) -> None:
    old = status(current)
    body = patch(
        old, old.model_copy(update={"progress": None, "last_checkpoint": None}), clear_trainer_fields=True
    )
    if cleared_body is None:
        assert body is None
    else:
        assert body is not None and {k: body[k] for k in cleared_body} == cleared_body


def test_metrics_keys_that_are_gone_are_sent_as_null() -> None:
    old = status({"runId": "0123456789ab", "metrics": {"evalLoss": 1.0, "trainLoss": 2.0}})
    new = old.model_copy(update={"metrics": {"evalLoss": 0.5}})
    body = patch(old, new, clear_trainer_fields=False)
    assert body is not None and body["metrics"] == {"trainLoss": None, "evalLoss": 0.5}


def test_the_invalid_spec_path_goes_through_the_same_writer() -> None:
    out, fake = writer()
    old = status({"phase": "Training", "progress": {"step": 3}})
    new = invalid_spec_status(old, 2, "invalid spec: x", NOW)
    assert out.write(ObjectMeta(name="tiny", namespace=NAMESPACE), old, new, clear_trainer_fields=False)
    sent = fake.patches[0][0][-1]["status"]
    assert sent["phase"] == "Failed" and "progress" not in sent
    # Written once: the same invalid spec seen again changes nothing.
    assert not out.write(
        ObjectMeta(name="tiny"), new, invalid_spec_status(new, 2, "invalid spec: x", NOW), False
    )


def test_a_finished_run_is_written_once() -> None:
    _, first = pass_status({}, T_COMPLETE)
    current, again = pass_status(first.model_dump(mode="json", by_alias=True), T_COMPLETE)
    assert patch(current, again, clear_trainer_fields=False) is None

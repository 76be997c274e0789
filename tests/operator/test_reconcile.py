"""services/reconcile.py: one pass acts on the decision and writes the status once, through the one
status writer. Kubernetes I/O is replaced by fakes that record the calls."""

from __future__ import annotations

from typing import Any

import pytest
from child_cases import (
    E_GATE_FAILED,
    NOW,
    STALE_RUN,
    STARTED,
    T_COMPLETE,
    T_RUNNING,
    T_SUSPENDED,
    Child,
    job,
    observed,
    pod,
    with_run,
)
from operator_cases import set_, tiny

from kubetune_api import FineTuneJob, FineTuneJobStatus, ObjectMeta
from kubetune_operator.services.reconcile import Reconciler
from kubetune_operator.settings import OperatorSettings


class FakeChildren:
    def __init__(self) -> None:
        self.settings = OperatorSettings(finished_job_ttl_seconds=600)
        self.calls: list[tuple[str, ...]] = []
        # Live edits of a running Job's limits (tests/operator/test_policy_queue.py covers them).
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def create_trainer(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        self.calls.append(("create_trainer",))
        return True

    def create_exporter(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        self.calls.append(("create_exporter",))
        return True

    def delete_run(self, ftj: FineTuneJob) -> None:
        self.calls.append(("delete_run",))

    def delete_finetunejob(self, ftj: FineTuneJob) -> None:
        self.calls.append(("delete_finetunejob",))

    def set_suspend(self, ftj: FineTuneJob, job_name: str, suspend: bool) -> None:
        self.calls.append(("set_suspend", job_name, str(suspend)))

    def patch_job(self, ftj: FineTuneJob, job_name: str, patch: dict[str, Any]) -> None:
        self.patches.append((job_name, patch))

    def patch_child(self, ftj: FineTuneJob, kind: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_child", kind, name, str(patch)))

    def set_workload_active(self, ftj: FineTuneJob, workload: str, active: bool) -> None:
        self.calls.append(("set_workload_active", workload, str(active)))

    def delete_child(self, ftj: FineTuneJob, kind: str, name: str) -> None:
        self.calls.append(("delete_child", kind, name))


class FakeWriter:
    def __init__(self) -> None:
        self.writes: list[tuple[FineTuneJobStatus, bool]] = []

    def write(
        self, meta: ObjectMeta, current: FineTuneJobStatus, new: FineTuneJobStatus, clear_trainer_fields: bool
    ) -> bool:
        self.writes.append((new, clear_trainer_fields))
        return True


def run_pass(
    ftj: FineTuneJob, trainer: Child | None, exporter: Child | None = None
) -> tuple[list[tuple[str, ...]], list[str], list[tuple[FineTuneJobStatus, bool]]]:
    children, writer = FakeChildren(), FakeWriter()
    result = Reconciler(children, writer, clock=lambda: NOW).reconcile(ftj, observed(ftj, trainer, exporter))  # type: ignore[arg-type]
    return children.calls, [e.reason for e in result.events], writer.writes


@pytest.mark.parametrize(
    ("edits", "trainer", "calls", "events"),
    [
        ((), None, [("create_trainer",)], ["CreatedTrainer", "Pending"]),
        ((), T_COMPLETE, [("create_exporter",)], ["CreatedExportJob", "Exporting"]),
        ((), with_run(T_RUNNING, STALE_RUN), [("delete_run",)], ["SpecChanged", "Pending"]),
        (
            (set_("spec.suspend", True),),
            T_RUNNING,
            [("set_suspend", "tiny-train", "True")],
            ["Suspended"] * 2,
        ),
        ((), T_SUSPENDED, [("set_suspend", "tiny-train", "False")], ["Resumed", "Pending"]),
    ],
    ids=["create-trainer", "create-exporter", "delete-stale", "suspend", "resume"],
)
def test_a_pass_acts_and_writes_the_status_once(
    edits: tuple[Any, ...], trainer: Child | None, calls: list[tuple[str, ...]], events: list[str]
) -> None:
    got_calls, got_events, writes = run_pass(tiny(*edits), trainer)
    assert got_calls == calls
    assert got_events == events
    assert len(writes) == 1


def test_a_new_run_clears_the_trainers_fields() -> None:
    ftj = tiny(set_("status", {"runId": STALE_RUN, "progress": {"step": 3}}))
    _, _, [(new, clear)] = run_pass(ftj, None)
    assert clear is True
    assert (new.run_id, new.progress) == (ftj.spec_hash(), None)


def test_the_jobs_of_a_finished_run_get_the_operators_ttl() -> None:
    ftj = tiny(set_("spec.export.enabled", False))
    calls, _, _ = run_pass(ftj, T_COMPLETE)
    assert calls == [("patch_child", "Job", "tiny-train", str({"spec": {"ttlSecondsAfterFinished": 600}}))]


def test_a_lost_checkpoint_is_a_warning_event_once() -> None:
    ftj = tiny()
    lost = (
        job("trainer", active=1, ready=1, failed=1, startTime=STARTED),
        [
            pod("trainer", "tiny-train-a", 8, "Error", "checkpoint did not upload", STARTED),
            pod("trainer", "tiny-train-b", None),
        ],
    )
    _, events, writes = run_pass(ftj, with_run(lost, ftj.spec_hash()))
    assert "CheckpointLost" in events
    status = writes[-1][0]
    assert (status.lost_checkpoints, status.preemptions) == (1, None)  # counted, and not a checkpointed stop
    seen = tiny(set_("status.runId", ftj.spec_hash()), set_("status.lostCheckpoints", 1))
    _, again, _ = run_pass(seen, with_run(lost, ftj.spec_hash()))
    assert "CheckpointLost" not in again


def test_a_missed_quality_gate_is_a_warning_event_once() -> None:
    ftj = tiny()
    _, events, writes = run_pass(ftj, T_COMPLETE, E_GATE_FAILED)
    assert events.count("QualityGateFailed") == 1 and "Failed" in events
    exported = writes[-1][0].condition("Exported")
    assert exported is not None and exported.reason == "QualityGateFailed"
    seen = tiny(set_("status", writes[-1][0].to_k8s()))
    _, again, _ = run_pass(seen, T_COMPLETE, E_GATE_FAILED)
    assert again == []

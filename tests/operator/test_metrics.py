"""The operator's metrics: the pure mapping from one pass to its observations (services/
metrics_recorder.observe), the per-FineTuneJob gauges computed at scrape time (metrics.py), and a
FineTuneJob's life through real reconciliation passes, read back from the Prometheus registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from child_cases import STALE_RUN, T_CREATED, T_RUNNING, Child, observed, t_complete
from kubernetes.client.exceptions import ApiException
from operator_cases import set_, tiny
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune_api import FineTuneJob, FineTuneJobStatus, ObjectMeta, Phase
from kubetune_operator import metrics
from kubetune_operator.metrics import FineTuneJobGauges
from kubetune_operator.services.metrics_recorder import MetricsRecorder, Seen, instrumented, observe
from kubetune_operator.services.reconcile import Reconciler
from spec_edits import Edit

CREATED = datetime(2025, 3, 1, 11, 48, 0, tzinfo=UTC)


def at(minute: int, second: int = 0) -> datetime:
    """11:MM:SS on the day of the child cases (at(60) is noon)."""
    return datetime(2025, 3, 1, 11, 0, 0, tzinfo=UTC) + timedelta(minutes=minute, seconds=second)


def stamp(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def job(namespace: str, *edits: Edit, status: dict[str, Any] | None = None) -> FineTuneJob:
    return tiny(
        set_("metadata.namespace", namespace),
        set_("metadata.creationTimestamp", stamp(CREATED)),
        *edits,
        set_("status", status or {}),
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---- observe: one pass -> observations -----------------------------------------------------------
RUN = tiny().spec_hash()


def seen(**changes: Any) -> Seen:
    base = Seen(
        time=at(50), phase=Phase.PENDING, run_id=RUN, run_began=CREATED, started=False, stepped=False, gpus=2
    )
    return Seen(**{**base.__dict__, **changes})


def status(**fields: Any) -> FineTuneJobStatus:
    return FineTuneJobStatus.model_validate({"runId": RUN, "phase": "Pending", **fields})


PROGRESS = {"step": 1, "loss": 2.5, "tokensPerSecond": 900.0, "updateTime": stamp(at(50, 30))}


@pytest.mark.parametrize(
    ("old", "new", "previous", "queued", "first_step", "gpu_hours"),
    [
        # A new job's first pass: nothing to observe yet.
        ({}, {}, None, None, None, 0.0),
        # The pass that sets startTime observes the queue time, from the creation.
        ({"runId": RUN}, {"startTime": stamp(at(50))}, seen(), 120.0, None, 0.0),
        # ... only that pass: the status keeps startTime, also across an operator restart.
        ({"runId": RUN, "startTime": stamp(at(50))}, {"startTime": stamp(at(50))}, None, None, None, 0.0),
        # ... and a concurrent pass that read the same old status does not observe it again.
        ({"runId": RUN}, {"startTime": stamp(at(50))}, seen(started=True), None, None, 0.0),
        # The first step a pass sees, after a pass that saw none: from the creation to its report.
        ({"runId": RUN}, {"progress": PROGRESS}, seen(), None, 150.0, 0.0),
        # ... not again once seen, nor after a restart (no previous pass: its time is unknown).
        ({"runId": RUN}, {"progress": PROGRESS}, seen(stepped=True), None, None, 0.0),
        ({"runId": RUN}, {"progress": PROGRESS}, None, None, None, 0.0),
        # Step 0 is no training step.
        ({"runId": RUN}, {"progress": {**PROGRESS, "step": 0}}, seen(), None, None, 0.0),
        # GPU-hours: the interval since a pass that saw Training, at that pass's GPUs (2 here).
        ({"runId": RUN}, {"phase": "Exporting"}, seen(phase=Phase.TRAINING, time=at(30)), None, None, 1.0),
        ({"runId": RUN}, {"phase": "Training"}, seen(phase=Phase.PENDING, time=at(30)), None, None, 0.0),
        ({"runId": RUN}, {"phase": "Training"}, None, None, None, 0.0),
    ],
    ids=[
        "first-pass",
        "queued",
        "queued-once",
        "queued-concurrent-pass",
        "first-step",
        "first-step-once",
        "first-step-after-restart",
        "step-zero",
        "gpu-hours",
        "no-gpu-hours-while-pending",
        "no-gpu-hours-after-restart",
    ],
)
def test_observe(
    old: dict[str, Any],
    new: dict[str, Any],
    previous: Seen | None,
    queued: float | None,
    first_step: float | None,
    gpu_hours: float,
) -> None:
    got, remembered = observe(job("ns", status=old), status(**new), at(60), previous)
    assert (got.queued_seconds, got.first_step_seconds) == (queued, first_step)
    assert got.gpu_hours == pytest.approx(gpu_hours)
    assert remembered.time == at(60)
    assert remembered.run_began == CREATED


def test_a_spec_change_begins_a_run_whose_queue_time_counts_from_the_change() -> None:
    ftj = job("ns", status={"runId": STALE_RUN, "startTime": stamp(at(40))})
    _, changed = observe(ftj, status(), at(50), seen(run_id=STALE_RUN, started=True))
    assert changed.run_began == at(50)
    assert not changed.started
    got, _ = observe(job("ns", status={"runId": RUN}), status(startTime=stamp(at(53))), at(54), changed)
    assert got.queued_seconds == 180.0


def test_the_trainer_gauges_come_from_the_carried_progress() -> None:
    got, _ = observe(job("ns"), status(phase="Training", progress=PROGRESS), at(51), seen())
    assert (got.phase, got.tokens_per_second, got.loss) == (Phase.TRAINING, 900.0, 2.5)
    cleared, _ = observe(job("ns"), status(), at(51), seen())
    assert (cleared.tokens_per_second, cleared.loss) == (None, None)


def test_gpus_are_per_node_times_nodes() -> None:
    ftj = job("ns", set_("spec.resources.gpusPerNode", 4), set_("spec.resources.nodes", 2))
    _, remembered = observe(ftj, status(), at(51), None)
    assert remembered.gpus == 8
    assert observe(job("ns"), status(), at(51), None)[1].gpus == 0  # the tiny example trains on CPU


# ---- the per-FineTuneJob gauges --------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(gauges: FineTuneJobGauges) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(gauges)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def phase_count(samples: dict[Any, float], namespace: str, phase: str) -> float | None:
    return samples.get(("kubetune_finetunejobs", (("namespace", namespace), ("phase", phase))))


def test_jobs_count_once_under_their_current_phase_and_deleted_ones_drop_out() -> None:
    clock = Clock()
    gauges = FineTuneJobGauges(stale_after=60, clock=clock)
    gauges.put("a", "one", Phase.TRAINING, 1000.0, 2.5)
    gauges.put("a", "two", Phase.QUEUED, None, None)
    gauges.put("b", "three", Phase.TRAINING, None, None)
    gauges.put("a", "two", Phase.TRAINING, None, None)  # admitted: moves from Queued to Training
    samples = scrape(gauges)
    assert phase_count(samples, "a", "Training") == 2
    assert phase_count(samples, "a", "Queued") == 0  # every phase of a namespace, at 0 when empty
    assert phase_count(samples, "b", "Training") == 1
    assert {
        p for (name, labels) in samples if name == "kubetune_finetunejobs" for k, p in labels if k == "phase"
    } == {p.value for p in Phase}
    assert samples[("kubetune_trainer_tokens_per_second", (("name", "one"), ("namespace", "a")))] == 1000.0
    assert samples[("kubetune_trainer_loss", (("name", "one"), ("namespace", "a")))] == 2.5
    # No progress reported: no trainer series.
    assert ("kubetune_trainer_loss", (("name", "two"), ("namespace", "a"))) not in samples

    gauges.forget("a", "one")
    samples = scrape(gauges)
    assert phase_count(samples, "a", "Training") == 1
    assert ("kubetune_trainer_loss", (("name", "one"), ("namespace", "a"))) not in samples

    # A job no pass has seen for stale_after seconds (deleted: Kopf stopped its timer) drops out, and
    # a namespace without jobs has no series.
    clock.now += 30
    gauges.put("a", "two", Phase.SUCCEEDED, None, None)
    clock.now += 31
    samples = scrape(gauges)
    assert phase_count(samples, "a", "Succeeded") == 1
    assert phase_count(samples, "b", "Training") is None


# ---- a FineTuneJob's life through reconciliation passes --------------------------------------------
class FakeChildren:
    def create_trainer(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        return True

    def create_exporter(self, ftj: FineTuneJob, active_deadline_seconds: int | None = None) -> bool:
        return True

    def delete_finetunejob(self, ftj: FineTuneJob) -> None:
        pass

    def patch_job(self, ftj: FineTuneJob, job_name: str, patch: dict[str, Any]) -> None:
        pass  # live edits of the running Job's limits (the fake Job has none)


class Writer:
    """Keeps what a pass wrote, as the API server would."""

    def __init__(self, fail: bool = False) -> None:
        self.written: dict[str, Any] = {}
        self.fail = fail

    def write(
        self, meta: ObjectMeta, current: FineTuneJobStatus, new: FineTuneJobStatus, clear_trainer_fields: bool
    ) -> bool:
        if self.fail:
            raise ApiException(status=409, reason="Conflict")
        self.written = new.to_k8s()
        return True


def test_a_job_through_its_passes() -> None:
    namespace = "metrics-life"
    gauges = FineTuneJobGauges(stale_after=600, clock=Clock())
    writer = Writer()
    recorder = MetricsRecorder(gauges)
    gpus = set_("spec.resources.gpusPerNode", 2)
    progress: dict[str, Any] = {}

    def run(when: datetime, trainer: Child | None) -> Phase:
        state = {**writer.written, **({"progress": progress} if progress else {})}
        ftj = job(namespace, gpus, status=state)
        reconciler = Reconciler(FakeChildren(), writer, clock=lambda: when, metrics=recorder)  # type: ignore[arg-type]
        return reconciler.reconcile(ftj, observed(ftj, trainer, None)).decision.phase

    passes_before = sample("kubetune_reconcile_duration_seconds_count")
    assert run(at(48, 5), None) == Phase.PENDING  # creates the trainer
    assert run(at(49), T_CREATED) == Phase.PENDING
    assert sample("kubetune_finetunejob_queued_seconds_count", namespace=namespace) == 0
    assert run(at(50, 3), T_RUNNING) == Phase.TRAINING  # the trainer Job started at 11:50:00
    assert sample("kubetune_finetunejob_queued_seconds_count", namespace=namespace) == 1
    assert sample("kubetune_finetunejob_queued_seconds_sum", namespace=namespace) == 120.0
    assert phase_count(scrape(gauges), namespace, "Training") == 1

    progress.update(step=3, loss=2.5, tokensPerSecond=1200.0, updateTime=stamp(at(50, 30)))  # the trainer
    assert run(at(51), T_RUNNING) == Phase.TRAINING
    progress.update(step=9, loss=1.75)
    assert run(at(59), T_RUNNING) == Phase.TRAINING
    # Once per run, not on every pass.
    assert sample("kubetune_finetunejob_queued_seconds_count", namespace=namespace) == 1
    assert sample("kubetune_finetunejob_time_to_first_step_seconds_count", namespace=namespace) == 1
    assert sample("kubetune_finetunejob_time_to_first_step_seconds_sum", namespace=namespace) == 150.0
    samples = scrape(gauges)
    assert samples[("kubetune_trainer_loss", (("name", "tiny"), ("namespace", namespace)))] == 1.75
    assert (
        samples[("kubetune_trainer_tokens_per_second", (("name", "tiny"), ("namespace", namespace)))] == 1200
    )

    finished = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert run(finished, t_complete(60)) == Phase.EXPORTING
    assert run(finished + timedelta(seconds=30), t_complete(90)) == Phase.EXPORTING
    # Training from the pass at 11:50:03 to the one that saw it end at 12:00:00, on 2 GPUs.
    gpu_seconds = (finished - at(50, 3)).total_seconds() * 2
    assert sample("kubetune_gpu_hours_total", namespace=namespace) == pytest.approx(gpu_seconds / 3600)
    samples = scrape(gauges)
    assert phase_count(samples, namespace, "Exporting") == 1
    assert phase_count(samples, namespace, "Training") == 0
    assert sample("kubetune_reconcile_duration_seconds_count") == passes_before + 7


def test_the_pass_that_deletes_an_expired_job_drops_its_gauges() -> None:
    gauges = FineTuneJobGauges(stale_after=600, clock=Clock())
    recorder = MetricsRecorder(gauges)
    succeeded = {"runId": RUN, "phase": "Succeeded", "progress": PROGRESS}
    recorder.record(
        job("metrics-ttl", status=succeeded), status(phase="Succeeded", progress=PROGRESS), at(50)
    )
    assert phase_count(scrape(gauges), "metrics-ttl", "Succeeded") == 1
    recorder.record(job("metrics-ttl"), status(phase="Succeeded"), at(51), deleting=True)
    assert scrape(gauges) == {}


def test_forget_drops_a_deleted_jobs_gauges_and_memory() -> None:
    gauges = FineTuneJobGauges(stale_after=600, clock=Clock())
    recorder = MetricsRecorder(gauges)
    recorder.record(job("metrics-forget"), status(phase="Training"), at(50))
    recorder.forget("metrics-forget", "tiny")
    assert scrape(gauges) == {}
    # No interval is counted from a pass of the forgotten job.
    recorder.record(
        job("metrics-forget", set_("spec.resources.gpusPerNode", 1)), status(phase="Training"), at(59)
    )
    assert sample("kubetune_gpu_hours_total", namespace="metrics-forget") == 0.0


def test_a_failing_pass_is_timed_and_counted_by_exception_type() -> None:
    errors_before = sample("kubetune_reconcile_errors_total", error="ApiException")
    passes_before = sample("kubetune_reconcile_duration_seconds_count")
    gauges = FineTuneJobGauges(stale_after=600, clock=Clock())
    reconciler = Reconciler(FakeChildren(), Writer(fail=True), metrics=MetricsRecorder(gauges))  # type: ignore[arg-type]
    ftj = job("metrics-errors")
    with pytest.raises(ApiException):
        reconciler.reconcile(ftj, observed(ftj, None, None))
    assert sample("kubetune_reconcile_errors_total", error="ApiException") == errors_before + 1
    assert sample("kubetune_reconcile_duration_seconds_count") == passes_before + 1
    assert scrape(gauges) == {}  # the status was not written: nothing recorded


def test_instrumented_passes_results_through() -> None:
    @instrumented
    def double(x: int) -> int:
        return 2 * x

    before = sample("kubetune_reconcile_duration_seconds_count")
    assert double(3) == 6
    assert sample("kubetune_reconcile_duration_seconds_count") == before + 1
    assert sample("kubetune_reconcile_errors_total", error="ValueError") == 0


def test_the_gauges_are_in_the_operators_registry() -> None:
    names = {family.name for family in REGISTRY.collect()}
    assert {"kubetune_finetunejobs", "kubetune_trainer_tokens_per_second", "kubetune_trainer_loss"} <= names
    assert metrics.FINETUNEJOBS.stale_after == metrics.stale_after(3.0) == 60.0

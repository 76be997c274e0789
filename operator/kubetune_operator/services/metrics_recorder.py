"""The operator's metrics, from one reconciliation pass at a time.

`observe` is pure: from the FineTuneJob as the pass read it (its current status), the status the pass
computed, the time, and what this process saw at the job's previous pass, it derives the pass's
observations. `MetricsRecorder` keeps that memory per job and hands the observations to the metrics
of metrics.py; `instrumented` times each pass and counts its errors.

What needs the previous pass, and what an operator restart does to it:
- GPU-hours accumulate over the interval since the previous pass when that pass saw `Training` (the
  trainer's pods were ready and hold their GPUs). A restarted operator has no previous pass: the time
  between the old process's last pass and the new one's first is not counted, and nothing is counted
  twice. The counter itself starts again at 0, as every Prometheus counter does after a restart.
- The time to the first step is observed on the pass that first sees a step of the run, after a pass
  that saw none. A job whose first step came while no operator watched is not observed.
- The queue time is observed on the pass that sets status.startTime, which the status keeps: a
  restarted operator sees it set and observes nothing again. It is measured from the FineTuneJob's
  creation or, for a run that a spec change began, from the pass that saw the change (after a
  restart, from the creation).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, TypeVar

from kubetune_api import FineTuneJob, FineTuneJobStatus, Phase
from kubetune_operator import metrics

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Seen:
    """What this process saw of a FineTuneJob at its latest pass."""

    time: datetime
    phase: Phase | None
    run_id: str | None
    # When the run began: the FineTuneJob's creation, or the pass that saw a spec change begin it.
    run_began: datetime | None
    started: bool  # status.startTime was set: training of the run had started
    stepped: bool  # the trainer had reported a step of the run
    gpus: int  # GPUs the trainer's pods hold while they run: gpusPerNode x nodes


@dataclass(frozen=True)
class Observations:
    """What one pass contributes to the metrics."""

    namespace: str
    name: str
    phase: Phase | None
    tokens_per_second: float | None = None
    loss: float | None = None
    queued_seconds: float | None = None
    first_step_seconds: float | None = None
    gpu_hours: float = 0.0


def observe(
    ftj: FineTuneJob, new: FineTuneJobStatus, now: datetime, previous: Seen | None
) -> tuple[Observations, Seen]:
    """The pass's observations, and what to remember of it for the next pass."""
    old = ftj.status
    if previous is not None and previous.run_id == new.run_id:
        run_began = previous.run_began
    elif old.run_id is not None and old.run_id != new.run_id:
        run_began = now  # this pass replaces the run: the spec changed
    else:
        run_began = ftj.metadata.creation_timestamp  # a new job, or the first pass of this process

    same_run = previous if previous is not None and previous.run_id == new.run_id else None
    # Set by this pass: a concurrent pass of the same job may have read the same old status.
    started = new.start_time is not None
    queued = None
    if started and old.start_time is None and not (same_run and same_run.started):
        queued = _seconds(run_began, new.start_time)

    # The trainer's report, which the status carries over (None when this pass starts a new run).
    progress = new.progress
    stepped = progress is not None and (progress.step or 0) > 0
    first_step = None
    if progress is not None and stepped and same_run and not same_run.stepped:
        first_step = _seconds(run_began, progress.update_time or now)

    gpu_hours = 0.0
    if previous is not None and previous.phase == Phase.TRAINING:
        gpu_hours = max(0.0, (now - previous.time).total_seconds()) / 3600 * previous.gpus

    resources = ftj.spec.resources
    seen = Seen(
        # A concurrent pass that took its time earlier but recorded later moves nothing back.
        time=max(now, previous.time) if previous is not None else now,
        phase=new.phase,
        run_id=new.run_id,
        run_began=run_began,
        started=started,
        stepped=stepped,
        gpus=resources.gpus_per_node * resources.nodes,
    )
    observations = Observations(
        namespace=ftj.metadata.namespace or "",
        name=ftj.metadata.name or "",
        phase=new.phase,
        tokens_per_second=progress.tokens_per_second if progress else None,
        loss=progress.loss if progress else None,
        queued_seconds=queued,
        first_step_seconds=first_step,
        gpu_hours=gpu_hours,
    )
    return observations, seen


def _seconds(since: datetime | None, until: datetime | None) -> float | None:
    if since is None or until is None:
        return None
    return max(0.0, (until - since).total_seconds())


class MetricsRecorder:
    """Called once per pass with the FineTuneJob and its new status. Passes of one job may run at the
    same time (the timer, and a child Job's event): the memory is updated under a lock, so an
    interval or a transition counts once."""

    def __init__(self, gauges: metrics.FineTuneJobGauges | None = None) -> None:
        self.gauges = gauges if gauges is not None else metrics.FINETUNEJOBS
        self._seen: dict[tuple[str, str], Seen] = {}
        self._lock = threading.Lock()

    def record(self, ftj: FineTuneJob, new: FineTuneJobStatus, now: datetime, deleting: bool = False) -> None:
        """`deleting`: this pass deletes the FineTuneJob (ttlSecondsAfterFinished passed). Metrics never
        fail a pass: an error here is logged."""
        try:
            self._record(ftj, new, now, deleting)
        except Exception:
            log.exception("cannot record the metrics of FineTuneJob %s", ftj.metadata.name)

    def _record(self, ftj: FineTuneJob, new: FineTuneJobStatus, now: datetime, deleting: bool) -> None:
        key = (ftj.metadata.namespace or "", ftj.metadata.name or "")
        with self._lock:
            got, seen = observe(ftj, new, now, self._seen.get(key))
            if deleting:
                self._seen.pop(key, None)
            else:
                self._seen[key] = seen
        apply(got)
        if deleting:
            self.gauges.forget(*key)
        else:
            self.gauges.put(got.namespace, got.name, got.phase, got.tokens_per_second, got.loss)

    def forget(self, namespace: str, name: str) -> None:
        """The FineTuneJob is gone: drop its gauges now rather than when they go stale."""
        with self._lock:
            self._seen.pop((namespace, name), None)
        self.gauges.forget(namespace, name)


def apply(got: Observations) -> None:
    """Hand one pass's observations to the process's metrics."""
    # The namespace's series exists from its first pass, at 0 for jobs without GPUs.
    metrics.GPU_HOURS.labels(namespace=got.namespace).inc(got.gpu_hours)
    if got.queued_seconds is not None:
        metrics.QUEUED_SECONDS.labels(namespace=got.namespace).observe(got.queued_seconds)
    if got.first_step_seconds is not None:
        metrics.TIME_TO_FIRST_STEP.labels(namespace=got.namespace).observe(got.first_step_seconds)


def instrumented(reconcile: Callable[P, R]) -> Callable[P, R]:
    """Times a reconciliation pass, and counts it by exception type when it raises."""

    @functools.wraps(reconcile)
    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        start = time.perf_counter()
        try:
            return reconcile(*args, **kwargs)
        except Exception as e:
            metrics.RECONCILE_ERRORS.labels(error=type(e).__name__).inc()
            raise
        finally:
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - start)

    return timed

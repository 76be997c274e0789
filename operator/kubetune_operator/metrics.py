"""Prometheus metrics of the operator: their names, types and labels, in one place.

The values come from services/metrics_recorder.py, which one reconciliation pass calls with the
FineTuneJob and its new status. The gauges of each FineTuneJob are not Gauge objects whose label sets
would have to be removed one by one: `FineTuneJobGauges` computes them at scrape time from what the
latest passes saw, so a job that moves between phases counts once, under its current phase, and a job
that is gone (deleted, or no longer observed) drops out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubetune_api import Phase
from kubetune_operator.settings import OperatorSettings

RECONCILES = Counter("kubetune_reconciles_total", "Reconciliation passes, by resulting phase.", ["phase"])
INVALID_SPECS = Counter("kubetune_invalid_specs_total", "FineTuneJobs rejected for an invalid spec.")

RECONCILE_DURATION = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Duration of one reconciliation pass of a FineTuneJob (observe, decide, act, write the status).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILE_ERRORS = Counter(
    "kubetune_reconcile_errors_total",
    "Reconciliation passes that raised, by exception type.",
    ["error"],
)

# From a few seconds (an idle cluster) to a day (a full queue).
WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
QUEUED_SECONDS = Histogram(
    "kubetune_finetunejob_queued_seconds",
    "Time from a run's creation (the FineTuneJob's, or the spec change that began the run) to the start "
    "of training (the trainer Job's admission and start); once per run.",
    ["namespace"],
    buckets=WAIT_BUCKETS,
)
TIME_TO_FIRST_STEP = Histogram(
    "kubetune_finetunejob_time_to_first_step_seconds",
    "Time from a run's creation to the first optimizer step the trainer reported in status.progress; "
    "once per run.",
    ["namespace"],
    buckets=WAIT_BUCKETS,
)
GPU_HOURS = Counter(
    "kubetune_gpu_hours_total",
    "GPU-hours held by running trainer pods (resources.gpusPerNode x resources.nodes while Training).",
    ["namespace"],
)


@dataclass(frozen=True)
class JobSample:
    """What the latest pass saw of one FineTuneJob."""

    phase: Phase | None
    tokens_per_second: float | None
    loss: float | None
    seen_at: float  # the collector's clock


class FineTuneJobGauges(Collector):
    """kubetune_finetunejobs{namespace,phase}, kubetune_trainer_tokens_per_second{namespace,name} and
    kubetune_trainer_loss{namespace,name}, computed at scrape time.

    A FineTuneJob the operator stopped observing (a deleted one: Kopf stops its timer) drops out
    `stale_after` seconds after its last pass, unless `forget` removed it sooner."""

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after, self.clock = stale_after, clock
        self._jobs: dict[tuple[str, str], JobSample] = {}
        self._lock = threading.Lock()

    def put(
        self,
        namespace: str,
        name: str,
        phase: Phase | None,
        tokens_per_second: float | None,
        loss: float | None,
    ) -> None:
        with self._lock:
            self._jobs[(namespace, name)] = JobSample(phase, tokens_per_second, loss, self.clock())

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((namespace, name), None)

    def current(self) -> dict[tuple[str, str], JobSample]:
        """The FineTuneJobs observed within `stale_after` seconds; older ones are dropped."""
        oldest = self.clock() - self.stale_after
        with self._lock:
            for key in [k for k, sample in self._jobs.items() if sample.seen_at < oldest]:
                del self._jobs[key]
            return dict(self._jobs)

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self.current()))

    @staticmethod
    def _families(jobs: dict[tuple[str, str], JobSample]) -> list[Metric]:
        phases = GaugeMetricFamily(
            "kubetune_finetunejobs",
            "FineTuneJobs by namespace and phase (every phase of a namespace that has FineTuneJobs).",
            labels=["namespace", "phase"],
        )
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), sample in jobs.items():
            for phase in Phase:
                counts.setdefault((namespace, phase.value), 0)
            if sample.phase is not None:
                counts[(namespace, sample.phase.value)] += 1
        for labels, count in sorted(counts.items()):
            phases.add_metric(list(labels), count)
        throughput = GaugeMetricFamily(
            "kubetune_trainer_tokens_per_second",
            "Training throughput of a FineTuneJob, all ranks (status.progress.tokensPerSecond).",
            labels=["namespace", "name"],
        )
        loss = GaugeMetricFamily(
            "kubetune_trainer_loss",
            "Training loss of a FineTuneJob, as last reported (status.progress.loss).",
            labels=["namespace", "name"],
        )
        for (namespace, name), sample in sorted(jobs.items()):
            if sample.tokens_per_second is not None:
                throughput.add_metric([namespace, name], sample.tokens_per_second)
            if sample.loss is not None:
                loss.add_metric([namespace, name], sample.loss)
        return [phases, throughput, loss]


def stale_after(resync_seconds: float) -> float:
    """Ten missed passes, and never under a minute."""
    return max(60.0, 10 * resync_seconds)


FINETUNEJOBS = FineTuneJobGauges(stale_after(OperatorSettings.from_env().resync_seconds))
REGISTRY.register(FINETUNEJOBS)

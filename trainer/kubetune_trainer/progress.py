"""Training progress: a transformers callback that reports to pluggable sinks.

The Kubernetes sink merge-patches the trainer's part of the status (`status.progress`, with the
latest evaluation in `progress.metrics`, and `status.lastCheckpoint`) of the FineTuneJob that started
the Job, so `kubectl get finetunejob` shows live progress.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from kubetune_api import GROUP, PLURAL, VERSION, Checkpoint, Progress, TrainerReport
from kubetune_trainer.evaluation import STATUS_NAMES, status_metrics

log = logging.getLogger(__name__)

JOB_NAME_ENV, JOB_NAMESPACE_ENV, INTERVAL_ENV = (
    "KUBETUNE_JOB_NAME",
    "KUBETUNE_JOB_NAMESPACE",
    "KUBETUNE_PROGRESS_INTERVAL",
)


class ProgressSink(Protocol):
    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        """A progress snapshot (camelCase keys); `final` marks the last one of a phase."""

    def metrics(self, metrics: dict[str, Any]) -> None:
        """Metrics: each evaluation's as it happens, then the final ones."""

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint now stored: step, uri and time (status.lastCheckpoint)."""


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JsonFileSink:
    """Appends one JSON line per event; for tests and local runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        self._append({"kind": "progress", "final": final, **progress})

    def metrics(self, metrics: dict[str, Any]) -> None:
        self._append({"kind": "metrics", **metrics})

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._append({"kind": "checkpoint", **checkpoint})

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]


class LoggingSink:
    """Logs progress to stdout (the pod log), at most once per `min_interval` s plus final events."""

    def __init__(self, min_interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval, self.clock = min_interval, clock
        self._last: float | None = None

    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        now = self.clock()
        if final or self._last is None or now - self._last >= self.min_interval:
            self._last = now
            log.info("progress %s", json.dumps(progress, sort_keys=True))

    def metrics(self, metrics: dict[str, Any]) -> None:
        log.info("metrics %s", json.dumps(metrics, sort_keys=True))

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        log.info("checkpoint %s", json.dumps(checkpoint, sort_keys=True))


class MultiSink:
    def __init__(self, *sinks: ProgressSink) -> None:
        self.sinks = sinks

    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        for sink in self.sinks:
            sink.progress(progress, final)

    def metrics(self, metrics: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.metrics(metrics)

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.checkpoint(checkpoint)


# What progress.metrics shows: each evaluation's metrics, under their status names.
LIVE_METRICS = frozenset(STATUS_NAMES.values())


def status_patch(
    progress: dict[str, Any] | None,
    metrics: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The merge-patch body for the FineTuneJob status subresource: only the trainer's own fields
    (the API's TrainerReport), built from a snapshot whose keys are the API's Progress field names.
    Evaluation metrics go to progress.metrics; status.metrics is the operator's."""
    live: dict[str, Any] = dict(progress or {})
    if metrics is not None:
        live["metrics"] = {k: v for k, v in numeric(metrics).items() if k in LIVE_METRICS}
    report = TrainerReport(
        progress=Progress.model_validate(live) if live else None,
        last_checkpoint=Checkpoint.model_validate(checkpoint) if checkpoint is not None else None,
    )
    return report.status_patch()


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """Finite numbers only: the status schema is a map of numbers."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _load_kube_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # Outside a pod (local runs, tests): the usual KUBECONFIG or ~/.kube/config.
        config.load_kube_config()
    return client.CustomObjectsApi()


# Often enough to follow a run live; rare enough that a fast run is not slowed by API writes (each
# patch is an etcd write and a watch event for the operator).
DEFAULT_STATUS_INTERVAL = 2.0


class KubernetesStatusSink:
    """Merge-patches the FineTuneJob's status, at most once per `min_interval` s plus a final patch.

    Patching is best effort: a failure is logged and training goes on.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        min_interval: float = 2.0,
        api: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.namespace, self.min_interval = name, namespace, min_interval
        self._api, self._clock = api, clock
        self._last_patch: float | None = None
        self._pending: dict[str, Any] | None = None
        self._disabled = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, default_namespace: str = "default") -> KubernetesStatusSink | None:
        name = os.environ.get(JOB_NAME_ENV)
        if not name:
            return None
        namespace = os.environ.get(JOB_NAMESPACE_ENV) or default_namespace
        return cls(name, namespace, float(os.environ.get(INTERVAL_ENV, str(DEFAULT_STATUS_INTERVAL))))

    def progress(self, progress: dict[str, Any], final: bool = False) -> None:
        with self._lock:
            now = self._clock()
            due = self._last_patch is None or now - self._last_patch >= self.min_interval
            if not (final or due):
                self._pending = progress
                return
            self._pending = None
            self._last_patch = now
        self._patch(status_patch(progress))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._patch(status_patch(pending))

    def metrics(self, metrics: dict[str, Any]) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        self._patch(status_patch(pending, metrics))

    def checkpoint(self, checkpoint: dict[str, Any]) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        self._patch(status_patch(pending, checkpoint=checkpoint))

    def _patch(self, body: dict[str, Any]) -> None:
        if self._disabled:
            return
        try:
            if self._api is None:
                self._api = _load_kube_api()
            self._api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                self.name,
                body,
                _content_type="application/merge-patch+json",
            )
        except Exception as exc:  # progress is informational: never fail training over it
            log.warning("cannot patch status of %s/%s %s: %s", self.namespace, PLURAL, self.name, exc)
            if self._api is None:
                # No cluster configuration at all: stop trying instead of warning every step.
                self._disabled = True


def sink_from_env(progress_file: Path | None, default_namespace: str, main: bool = True) -> ProgressSink:
    """Logs, plus the FineTuneJob's status and the progress file from the job's main process only."""
    sinks: list[ProgressSink] = [LoggingSink()]
    if not main:
        return MultiSink(*sinks)
    kube = KubernetesStatusSink.from_env(default_namespace)
    if kube is not None:
        sinks.append(kube)
    if progress_file is not None:
        sinks.append(JsonFileSink(progress_file))
    return MultiSink(*sinks)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ProgressCallback(TrainerCallback):
    """Turns Trainer events into progress snapshots: step, ETA, loss, learning rate, tokens/s."""

    def __init__(self, sink: ProgressSink, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.clock = sink, clock
        self.start: float | None = None
        self.end: float | None = None
        # The step training (re)started from: a resumed run's speed counts only its own steps.
        self.start_step = self.start_tokens = 0
        self.phase = "starting"
        self.last: dict[str, Any] = {}

    def snapshot(self, state: Any, phase: str) -> dict[str, Any]:
        step, total = int(state.global_step), int(state.max_steps or 0)
        now = self.end if self.end is not None else self.clock()
        elapsed = now - (self.start if self.start is not None else now)
        done_here = step - self.start_step
        # Resuming from a run's last checkpoint trains one more step than planned: never past 100%.
        eta = elapsed / done_here * max(total - step, 0) if done_here > 0 and total else None
        tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self.start_tokens
        self.last = {
            **self.last,
            "phase": phase,
            "step": step,
            "totalSteps": total,
            "progressPercentage": min(int(100 * step / total), 100) if total else 0,
            "estimatedRemainingSeconds": round(eta) if eta is not None else None,
            "epoch": round(float(state.epoch), 4) if state.epoch is not None else 0.0,
            "tokensPerSecond": round(tokens / elapsed, 1) if elapsed > 0 and tokens else None,
            "elapsedSeconds": round(elapsed, 1),
            "updateTime": utc_now(),
        }
        return self.last

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start, self.phase = self.clock(), "training"
        self.start_step = int(state.global_step)
        self.start_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.sink.progress(self.snapshot(state, self.phase), final=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.sink.progress(self.snapshot(state, self.phase))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        logs = logs or {}
        for source, target in (
            ("loss", "loss"),
            ("eval_loss", "evalLoss"),
            ("learning_rate", "learningRate"),
        ):
            if source in logs:
                self.last[target] = _finite(logs[source])
        evaluated = status_metrics(logs)
        if evaluated:
            self.sink.metrics(evaluated)
        if "loss" in logs or "eval_loss" in logs:
            # An evaluation after training (trainer.evaluate()) keeps the "trained" phase.
            self.sink.progress(self.snapshot(state, self.phase), final=self.phase == "trained")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end, self.phase = self.clock(), "trained"
        self.sink.progress(self.snapshot(state, self.phase), final=True)

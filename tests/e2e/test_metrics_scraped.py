"""The operator's Prometheus metrics on the local cluster, scraped from the operator pods' /metrics
while a tiny FineTuneJob on one (fake) GPU trains and after it succeeds: the job counted once under
its phase, trainer throughput and loss, one queue-time and one first-step observation, GPU-hours for
its namespace within what the trainer Job ran, reconcile timings; and its series gone once it is
deleted."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from e2e_support import apply_ftj, tiny_job, wait_phase
from support import wait_for

pytestmark = pytest.mark.cluster

# The chart's default resyncSeconds: one reconciliation pass of each FineTuneJob this often.
RESYNC_SECONDS = 3
# The chart's default: a FineTuneJob no pass has seen for this long drops out of the gauges.
STALE_AFTER_SECONDS = 60
ONE_GPU = {"gpusPerNode": 1, "cpu": 1, "memory": "4Gi"}
# Long enough to be seen training for a while (the tiny model trains 240 steps in about 5 s).
STEPS = 2000
PHASES = ("Pending", "Queued", "Training", "Exporting", "Succeeded", "Failed", "Suspended")


@dataclass
class Scrape:
    """Samples of every operator replica that answered, summed per name and labels: only the leader
    reconciles, so no other replica adds to the FineTuneJobs' series."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)
    families: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                self.samples[key] = self.samples.get(key, 0.0) + s.value

    def value(self, sample: str, /, **labels: str) -> float | None:
        """The sample with exactly these labels, or None when there is none."""
        return self.samples.get((sample, frozenset(labels.items())))

    def matching(self, sample: str, /, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        """Samples of that name whose labels include these."""
        wanted = set(labels.items())
        return {key: v for (n, key), v in self.samples.items() if n == sample and wanted <= key}


def scrape(core: client.CoreV1Api, namespace: str) -> Scrape:
    """GET /metrics of each running operator pod, at its IP (on the local cluster: a loopback
    address of this machine) and the port the chart names `metrics`."""
    pods = [
        p
        for p in core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/name=kubetune").items
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp and p.status.pod_ip
    ]
    assert pods, f"no running operator pod in {namespace}"
    result, answered = Scrape(), 0
    for pod in pods:
        (container,) = [c for c in pod.spec.containers if c.name == "operator"]
        (port,) = [p.container_port for p in container.ports if p.name == "metrics"]
        try:
            with urllib.request.urlopen(f"http://{pod.status.pod_ip}:{port}/metrics", timeout=5) as reply:
                result.add(reply.read().decode())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            continue  # a standby replica: only the leader serves metrics
        answered += 1
    assert answered, f"no operator pod answered on /metrics: {[p.metadata.name for p in pods]}"
    return result


def phase_counts(m: Scrape, namespace: str) -> dict[str, float]:
    return {
        dict(labels)["phase"]: value
        for labels, value in m.matching("kubetune_finetunejobs", namespace=namespace).items()
    }


def parse_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def test_metrics_follow_a_training_job(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:
    name = "metered"
    training = {
        **tiny_job("x", s3_seeded)["spec"]["training"],
        "maxSteps": STEPS,
        "saveSteps": STEPS,
        "loggingSteps": 1,
    }
    body = tiny_job(name, s3_seeded, training=training, resources=ONE_GPU, export={"enabled": False})
    before = scrape(core, operator_release)
    # Every family exists from the start (the labelled ones without samples until first used).
    assert {
        "kubetune_finetunejobs",
        "kubetune_reconcile_duration_seconds",
        "kubetune_reconcile_errors",
        "kubetune_finetunejob_queued_seconds",
        "kubetune_finetunejob_time_to_first_step_seconds",
        "kubetune_gpu_hours",
        "kubetune_trainer_tokens_per_second",
        "kubetune_trainer_loss",
    } <= before.families, before.families
    # A fresh namespace: none of its series exist yet.
    assert not phase_counts(before, workspace)
    assert before.value("kubetune_gpu_hours_total", namespace=workspace) is None
    passes_before = before.value("kubetune_reconcile_duration_seconds_count") or 0.0
    training_passes_before = before.value("kubetune_reconciles_total", phase="Training") or 0.0

    apply_ftj(custom, workspace, body)

    # While it trains: counted once, under Training, with the trainer's throughput and loss.
    def training_seen() -> Scrape | None:
        m = scrape(core, operator_release)
        tokens = m.value("kubetune_trainer_tokens_per_second", namespace=workspace, name=name)
        loss = m.value("kubetune_trainer_loss", namespace=workspace, name=name)
        counts = phase_counts(m, workspace)
        if counts.get("Training") == 1 and tokens and loss is not None:
            return m
        return None

    during = wait_for(training_seen, 300, f"{name} to be scraped as Training with throughput and loss", 1)
    counts = phase_counts(during, workspace)
    assert set(counts) == set(PHASES), counts  # every phase of the namespace, 0 but Training
    assert sum(counts.values()) == 1, counts
    tokens = during.value("kubetune_trainer_tokens_per_second", namespace=workspace, name=name)
    loss = during.value("kubetune_trainer_loss", namespace=workspace, name=name)
    assert tokens is not None and tokens > 0, tokens
    assert loss is not None and math.isfinite(loss) and loss > 0, loss
    assert during.value("kubetune_finetunejob_queued_seconds_count", namespace=workspace) == 1

    ftj = wait_phase(custom, workspace, name, {"Succeeded", "Failed"}, 900)
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    progress = ftj["status"]["progress"]

    def completed() -> client.V1JobStatus | None:
        status = batch.read_namespaced_job(f"{name}-train", workspace).status
        return status if status.completion_time else None

    # The phase follows the trainer pod's exit; the Job's completionTime may come a moment later.
    trainer = wait_for(completed, 30, "the trainer Job's completionTime")

    # Finished: the job moved from Training to Succeeded (not counted in both), and its trainer
    # gauges hold the last report of status.progress until it is deleted.
    def succeeded_seen() -> Scrape | None:
        m = scrape(core, operator_release)
        counts = phase_counts(m, workspace)
        settled = m.value("kubetune_trainer_loss", namespace=workspace, name=name) == progress["loss"]
        return m if counts.get("Succeeded") == 1 and counts.get("Training") == 0 and settled else None

    after = wait_for(succeeded_seen, 60, f"{name} to be scraped as Succeeded with its final progress", 1)
    assert sum(phase_counts(after, workspace).values()) == 1
    assert (
        after.value("kubetune_trainer_tokens_per_second", namespace=workspace, name=name)
        == progress["tokensPerSecond"]
    )

    # One observation of each per run, not one per pass; first the start of training, then its first
    # step, both within the job's life so far (timestamps are whole seconds: a second of slack).
    created = parse_time(ftj["metadata"]["creationTimestamp"])
    lifetime = (trainer.completion_time - created).total_seconds()
    assert after.value("kubetune_finetunejob_queued_seconds_count", namespace=workspace) == 1
    assert after.value("kubetune_finetunejob_time_to_first_step_seconds_count", namespace=workspace) == 1
    queued = after.value("kubetune_finetunejob_queued_seconds_sum", namespace=workspace)
    first_step = after.value("kubetune_finetunejob_time_to_first_step_seconds_sum", namespace=workspace)
    assert queued is not None and first_step is not None
    assert 0 <= queued <= first_step + 1 <= lifetime + 2, (queued, first_step, lifetime)
    assert queued == pytest.approx((trainer.start_time - created).total_seconds(), abs=1)

    # GPU-hours: 1 GPU while the trainer pod ran, never more than the trainer Job's life plus about a
    # pass (the pass that saw it end counts the interval since the one before; whole-second stamps).
    gpu_hours = after.value("kubetune_gpu_hours_total", namespace=workspace)
    job_seconds = (trainer.completion_time - trainer.start_time).total_seconds()
    assert gpu_hours is not None and 0 < gpu_hours * 3600 <= job_seconds + 3 * RESYNC_SECONDS + 2, (
        gpu_hours * 3600 if gpu_hours else gpu_hours,
        job_seconds,
    )

    # The operator's own passes were timed and counted.
    assert (after.value("kubetune_reconcile_duration_seconds_count") or 0) > passes_before
    assert (after.value("kubetune_reconcile_duration_seconds_sum") or 0) > 0
    assert (after.value("kubetune_reconciles_total", phase="Training") or 0) > training_passes_before
    assert "kubetune_reconcile_errors" in after.families

    # Deleted: its gauges go (at once with a delete hook, else once no pass has seen it for
    # STALE_AFTER_SECONDS); the namespace's GPU-hours stay, as a counter does.
    custom.delete_namespaced_custom_object("kubetune.dev", "v1alpha1", workspace, "finetunejobs", name)

    def gone() -> Scrape | None:
        m = scrape(core, operator_release)
        left = [
            *m.matching("kubetune_trainer_loss", namespace=workspace),
            *m.matching("kubetune_trainer_tokens_per_second", namespace=workspace),
            *m.matching("kubetune_finetunejobs", namespace=workspace),
        ]
        return None if left else m

    final = wait_for(gone, STALE_AFTER_SECONDS + 60, f"the series of the deleted {name} to go", 2)
    assert final.value("kubetune_gpu_hours_total", namespace=workspace) == gpu_hours

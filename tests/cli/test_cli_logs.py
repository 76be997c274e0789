"""`kubetune logs` against a finished tiny FineTuneJob on the local cluster: the trainer's and the
export's log found by the operator's labels, and the errors a user meets."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from kubetune_cli import logs

pytestmark = pytest.mark.cluster

Kubetune = Callable[..., subprocess.CompletedProcess[str]]


def pod(name: str, created: int, rank: int | None = None, restart: int | None = None) -> client.V1Pod:
    labels = {}
    if rank is not None:
        labels[logs.COMPLETION_INDEX] = str(rank)
    if restart is not None:
        labels[logs.JOBSET_RESTART_LABEL] = str(restart)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name, labels=labels, creation_timestamp=datetime(2026, 1, 1, 0, created, tzinfo=UTC)
        )
    )


def test_the_newest_attempt_of_a_rank_is_read() -> None:
    """Of a multi-node JobSet: a later group restart wins over an earlier pod created later (its
    clock may differ), and only the pods of the asked rank count."""
    run = logs.Run(name="big", run_id="abc", nodes=2, phase="Training", message="")
    pods = [
        pod("big-train-trainer-0-0-a", 1, rank=0, restart=0),
        pod("big-train-trainer-0-1-a", 2, rank=1, restart=0),
        pod("big-train-trainer-0-0-b", 3, rank=0, restart=1),
        pod("big-train-trainer-0-1-b", 0, rank=1, restart=1),
    ]
    newest = {
        rank: [
            logs.pod_name(p)
            for p in sorted(logs.pods_of_rank(pods, run, rank, logs.TRAINER), key=logs.attempt_key)
        ]
        for rank in (0, 1)
    }
    assert newest == {
        0: ["big-train-trainer-0-0-a", "big-train-trainer-0-0-b"],
        1: ["big-train-trainer-0-1-a", "big-train-trainer-0-1-b"],
    }
    # A single-node Job's replacement pods: the later one.
    single = logs.Run(name="tiny", run_id="abc", nodes=1, phase="Training", message="")
    replaced = [pod("tiny-train-b", 5), pod("tiny-train-a", 2)]
    ordered = sorted(logs.pods_of_rank(replaced, single, 0, logs.TRAINER), key=logs.attempt_key)
    assert [logs.pod_name(p) for p in ordered] == ["tiny-train-a", "tiny-train-b"]


def test_logs_show_the_trainers_log(kubetune: Kubetune, finished_job: Any) -> None:
    run_id = finished_job.obj["status"]["runId"]
    done = kubetune("-n", finished_job.namespace, "logs", finished_job.name)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("==> pod tiny-train-"), done.stderr
    assert f"(trainer, attempt 1, Succeeded, run {run_id}) <==" in done.stderr, done.stderr
    # The trainer's own log lines: its progress to the last of the example's 5 steps.
    assert "kubetune_trainer" in done.stdout, done.stdout[-2000:]
    assert "5/5" in done.stdout or "step 5" in done.stdout, done.stdout[-2000:]

    last = kubetune("-n", finished_job.namespace, "logs", finished_job.name, "--tail", "2")
    assert last.returncode == 0, last.stderr
    assert last.stdout.splitlines() == done.stdout.splitlines()[-2:]

    # -f on a container that has ended prints the whole log and returns.
    followed = kubetune("-n", finished_job.namespace, "logs", "-f", finished_job.name, timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == done.stdout


def test_logs_export_shows_the_export_jobs_log(kubetune: Kubetune, finished_job: Any) -> None:
    done = kubetune("-n", finished_job.namespace, "logs", finished_job.name, "--export")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("==> pod tiny-export-"), done.stderr
    assert "(exporter, attempt 1, Succeeded" in done.stderr
    assert "fp32-cpu" in done.stdout, done.stdout[-2000:]


def test_logs_of_a_rank_a_single_node_job_lacks(kubetune: Kubetune, finished_job: Any) -> None:
    done = kubetune("-n", finished_job.namespace, "logs", finished_job.name, "--rank", "5")
    assert done.returncode == 2, done
    assert (
        f"--rank 5: FineTuneJob {finished_job.namespace}/tiny trains on 1 node (spec.resources.nodes), "
        "so its ranks are 0"
    ) in " ".join(done.stderr.split()), done.stderr
    assert done.stdout == ""


def test_logs_of_a_missing_job(kubetune: Kubetune, cluster_env: dict[str, str]) -> None:
    done = kubetune("-n", "default", "logs", "missing")
    assert done.returncode == 3, done
    assert "FineTuneJob default/missing not found" in done.stderr
    assert "Traceback" not in done.stderr

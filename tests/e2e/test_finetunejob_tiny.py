"""A FineTuneJob on the local cluster, through the operator installed with its chart: training,
export, live progress, artifacts whose checksums match S3, and cleanup."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kubernetes import client

from e2e_support import StatusRecorder, apply_ftj, deleted, events_once, get_ftj, tiny_job, wait_phase
from operator_replicas import leader_pod
from support import wait_for

pytestmark = pytest.mark.cluster


def s3_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def test_tiny_job_trains_exports_and_reports(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    s3: Any,
) -> None:
    body = tiny_job(
        "tiny", s3_seeded, training={**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 12}
    )
    with StatusRecorder(custom, workspace, "tiny") as recorder:
        apply_ftj(custom, workspace, body)
        ftj = wait_phase(custom, workspace, "tiny", {"Succeeded", "Failed"}, 600)
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    # The phases followed the children, and progress moved while the trainer ran.
    phases = recorder.phases()
    assert {"Training", "Exporting", "Succeeded"} <= set(phases), phases
    assert phases.index("Training") < phases.index("Exporting") < phases.index("Succeeded"), phases
    assert len(recorder.training_steps()) >= 2, f"progress did not move during training: {recorder.statuses}"
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 12
    assert status["progress"]["progressPercentage"] == 100
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Trained": "True",
        "Exported": "True",
    }
    assert (
        status["runId"]
        and status["trainerJobName"] == "tiny-train"
        and status["exportJobName"] == "tiny-export"
    )
    assert "eval_loss" in status["metrics"] or "evalLoss" in status["metrics"], status["metrics"]

    # Every artifact is in S3, and the manifest's checksums match the objects.
    kinds = {a["kind"]: a for a in status["artifacts"]}
    assert {"adapter", "onnx", "manifest"} <= kinds.keys(), kinds
    manifest_bucket, manifest_key = s3_location(kinds["manifest"]["uri"])
    raw = s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read()
    assert hashlib.sha256(raw).hexdigest() == kinds["manifest"]["sha256"]
    manifest = json.loads(raw)
    assert manifest["schemaVersion"] == "kubetune.dev/manifest/v1" and manifest["promoted"] is True
    recorded = {a["kind"] for a in manifest["artifacts"]}
    assert {"adapter", "merged", "onnx"} <= recorded, recorded
    files = [entry for artifact in manifest["artifacts"] for entry in artifact["files"]]
    # One folder per export target: the example's is fp32 on cpu.
    assert any(f["uri"].endswith("/onnx/fp32-cpu/model.onnx") for f in files), files
    for entry in files:
        bucket, key = s3_location(entry["uri"])
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert len(data) == entry["size"], entry
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry

    # Kubernetes Events tell the story on the FineTuneJob itself.
    story = {"CreatedTrainer", "CreatedExportJob", "Succeeded"}
    events_once(
        core, workspace, "tiny", lambda ev: story <= {e.reason for e in ev}, f"the Events {sorted(story)}"
    )

    # The finished run's Jobs get the operator's TTL (the chart's trainerPods.finishedJobTtlSeconds).
    for job_name in ("tiny-train", "tiny-export"):
        wait_for(
            lambda name=job_name: (
                batch.read_namespaced_job(name, workspace).spec.ttl_seconds_after_finished == 86400
            ),
            30,
            f"{job_name} to get its ttlSecondsAfterFinished",
        )

    # Deleting the FineTuneJob removes its Jobs and pods; the artifacts stay in S3.
    train_job = batch.read_namespaced_job("tiny-train", workspace)
    assert train_job.metadata.owner_references[0].kind == "FineTuneJob"
    custom.delete_namespaced_custom_object("kubetune.dev", "v1alpha1", workspace, "finetunejobs", "tiny")
    wait_for(
        lambda: deleted(lambda: batch.read_namespaced_job("tiny-train", workspace)),
        60,
        "Jobs to be collected",
    )
    wait_for(lambda: not core.list_namespaced_pod(workspace).items, 60, "pods to be collected")
    assert s3.head_object(Bucket=manifest_bucket, Key=manifest_key)["ContentLength"] == len(raw)


BUSY_CLUSTER_EVENTS = 300


def unrelated_event(namespace: str, index: int) -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"busy-{index}", namespace=namespace),
        involved_object=client.V1ObjectReference(kind="ConfigMap", name=f"cm-{index}", namespace=namespace),
        reason="Busy",
        message="an unrelated Event",
        type="Normal",
    )


def test_operator_restart_mid_training_creates_no_duplicates(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:
    training = {**tiny_job("x", s3_seeded)["spec"]["training"], "maxSteps": 400}
    body = tiny_job("restart", s3_seeded, training=training, export={"enabled": False})
    apply_ftj(custom, workspace, body)
    wait_phase(custom, workspace, "restart", {"Training"}, 180)
    job_uid = batch.read_namespaced_job("restart-train", workspace).metadata.uid
    before = get_ftj(custom, workspace, "restart")["status"]
    # A busy cluster: the new operator must fill its Event index from hundreds of unrelated Events
    # before it handles anything (a Kopf worker limit below that count once deadlocked startup).
    for i in range(BUSY_CLUSTER_EVENTS):
        core.create_namespaced_event(workspace, unrelated_event(workspace, i))

    # The leader stops cleanly (SIGTERM), hands the Lease over, and a replacement pod starts; the new
    # leader must carry on with the same Jobs.
    leader = wait_for(lambda: leader_pod(core), 30, "a leader")
    core.delete_namespaced_pod(leader, operator_release)
    wait_for(lambda: (new := leader_pod(core)) and new != leader, 60, "another replica to lead")

    ftj = wait_phase(custom, workspace, "restart", {"Succeeded", "Failed"}, 600)
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    jobs = batch.list_namespaced_job(workspace).items
    assert [j.metadata.name for j in jobs] == ["restart-train"]
    assert jobs[0].metadata.uid == job_uid, "the trainer Job was recreated"
    assert len(core.list_namespaced_pod(workspace, label_selector="job-name=restart-train").items) == 1
    after = ftj["status"]
    assert after["runId"] == before["runId"]
    assert after["startTime"] == before["startTime"]
    assert after["progress"]["step"] == 400

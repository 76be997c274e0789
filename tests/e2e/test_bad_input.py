"""Bad input ends in Failed at once, with the reason in the FineTuneJob's condition and an Event,
without retry loops, and without touching what is already in S3. (Specs the API server itself
rejects are covered in tests/api/test_api_cluster.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from devcluster.settings import LIMITED_CREDENTIAL_VARIABLES as LIMITED
from e2e_support import apply_ftj, events_once, tiny_job, wait_phase
from kubetune_api import RunLayout

pytestmark = pytest.mark.cluster


def _missing_dataset(seeded: dict[str, str]) -> dict[str, Any]:
    job = tiny_job("bad", seeded)
    job["spec"]["dataset"]["trainUri"] = f"s3://{seeded['bucket']}/datasets/does-not-exist.jsonl"
    return job


def _missing_template_field(seeded: dict[str, str]) -> dict[str, Any]:
    job = tiny_job("bad", seeded)
    job["spec"]["dataset"]["textTemplate"] = "Phrase: {phrase}\nMood: {mood}"
    return job


def _wrong_credentials(seeded: dict[str, str]) -> dict[str, Any]:
    job = tiny_job("bad", seeded)
    job["spec"]["output"]["credentialsSecretRef"] = {"name": "wrong-s3"}
    return job


def _not_a_model(seeded: dict[str, str]) -> dict[str, Any]:
    job = tiny_job("bad", seeded)
    job["spec"]["baseModel"]["uri"] = f"s3://{seeded['bucket']}/datasets/tone/"
    return job


def _unwritable_shared_bases(seeded: dict[str, str]) -> dict[str, Any]:
    """The limited identity may write the run's output but only read the shared-base bucket."""
    job = tiny_job("bad", seeded)
    job["spec"]["output"]["credentialsSecretRef"] = {"name": "limited-s3"}
    job["spec"]["export"] = {"adapter": True, "sharedBaseUri": f"s3://{seeded['readonly_bucket']}/onnx-bases"}
    return job


CASES = {
    "dataset URI that does not exist": (_missing_dataset, ["does-not-exist.jsonl"]),
    "template field missing from the data": (_missing_template_field, ["mood", "row 1"]),
    "wrong S3 credentials": (_wrong_credentials, ["credentials"]),
    "model URI that is not a model": (_not_a_model, ["model"]),
    # Found before training, not after: the export could never store its shared base.
    "shared-base prefix without write access": (
        _unwritable_shared_bases,
        [
            "no write access to the shared base onnx models (export.sharedBaseUri)",
            "readonly/onnx-bases",
            "AccessDenied",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_once_with_a_clear_reason(
    case: str,
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    s3: Any,
    cluster_env: dict[str, str],
) -> None:
    build, words = CASES[case]
    keys = {"wrong-s3": ("not-a-key", "not-a-secret"), "limited-s3": tuple(cluster_env[v] for v in LIMITED)}
    for name, (key_id, secret) in keys.items():
        core.create_namespaced_secret(
            workspace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=name),
                string_data={"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret},
            ),
        )
    before = s3.head_object(Bucket=s3_seeded["bucket"], Key="datasets/tone/train.jsonl")["ETag"]
    apply_ftj(custom, workspace, build(s3_seeded))

    ftj = wait_phase(custom, workspace, "bad", {"Failed", "Succeeded"}, 300)

    status = ftj["status"]
    assert status["phase"] == "Failed", status
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "TrainingFailed"
    for word in words:
        assert word.lower() in stalled["message"].lower(), stalled["message"]
    assert "BackoffLimitExceeded" not in stalled["message"]

    def is_failed(e: client.CoreV1Event) -> bool:
        return bool(e.type == "Warning" and e.reason == "Failed")

    events = events_once(core, workspace, "bad", lambda ev: any(map(is_failed, ev)), "a Warning Event Failed")
    warning = [e for e in events if is_failed(e)]
    assert warning[0].message == stalled["message"]
    # A permanent error fails the Job at once: one pod, no retries.
    job = batch.read_namespaced_job("bad-train", workspace)
    assert job.status.failed == 1, job.status
    assert len(core.list_namespaced_pod(workspace, label_selector="job-name=bad-train").items) == 1
    # Nothing that was in S3 before is lost.
    assert s3.head_object(Bucket=s3_seeded["bucket"], Key="datasets/tone/train.jsonl")["ETag"] == before


def test_an_oom_killed_trainer_says_so(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
) -> None:
    job = tiny_job("small", s3_seeded, backoffLimit=0)
    job["spec"]["resources"]["memory"] = "200Mi"  # importing PyTorch alone needs more
    apply_ftj(custom, workspace, job)

    status = wait_phase(custom, workspace, "small", {"Failed", "Succeeded"}, 300)["status"]

    assert status["phase"] == "Failed", status
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert "OOM-killed" in stalled["message"] and "spec.resources.memory" in stalled["message"], stalled


def test_a_spec_this_version_cannot_run_fails_without_creating_jobs(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
) -> None:
    job = tiny_job("later", s3_seeded)
    # The API server's CEL only sees that a {field} is there; the model's own validator also checks
    # that every placeholder names a row field, before any Job exists.
    job["spec"]["dataset"]["textTemplate"] = "Phrase: {phrase}\nTone: {0}"
    apply_ftj(custom, workspace, job)

    status = wait_phase(custom, workspace, "later", {"Failed", "Training", "Succeeded"}, 120)["status"]

    assert status["phase"] == "Failed", status
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec" and "spec.dataset.textTemplate" in stalled["message"], stalled
    assert batch.list_namespaced_job(workspace).items == []

    def is_invalid(e: client.CoreV1Event) -> bool:
        return bool(e.type == "Warning" and e.reason == "InvalidSpec" and "textTemplate" in e.message)

    events_once(core, workspace, "later", lambda ev: any(map(is_invalid, ev)), "a Warning Event InvalidSpec")


def test_a_missed_quality_gate_promotes_nothing_and_says_why(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    batch: client.BatchV1Api,
    s3: Any,
) -> None:
    job = tiny_job("gated", s3_seeded)
    # A random tiny model answers no held-out row right: exact match 0 misses the minimum.
    job["spec"]["export"]["gate"] = [{"metric": "exactMatch", "min": 0.5}]
    apply_ftj(custom, workspace, job)

    status = wait_phase(custom, workspace, "gated", {"Failed", "Succeeded"}, 600)["status"]

    assert status["phase"] == "Failed", status
    exported = next(c for c in status["conditions"] if c["type"] == "Exported")
    assert exported["status"] == "False" and exported["reason"] == "QualityGateFailed", exported
    assert "fp32-cpu: exactMatch 0.000 < 0.5" in exported["message"], exported
    assert "nothing was promoted" in exported["message"] and "/rejected/" in exported["message"], exported
    every = events_once(
        core,
        workspace,
        "gated",
        lambda ev: any(e.reason == "QualityGateFailed" for e in ev),
        "an Event QualityGateFailed",
    )
    events = [e for e in every if e.reason == "QualityGateFailed"]
    assert [e.type for e in events] == ["Warning"], sorted(e.reason for e in every)
    assert events[0].message == exported["message"]
    # Permanent: the export Job failed once, and was not retried.
    assert batch.read_namespaced_job("gated-export", workspace).status.failed == 1
    # In S3: the rejected export and its manifest, and no promoted manifest or ONNX model.
    run = RunLayout.of(job["spec"]["output"]["uri"], workspace, "gated", status["runId"])
    bucket, key = s3_seeded["bucket"], run.root.removeprefix(f"s3://{s3_seeded['bucket']}/")
    keys = {o["Key"][len(key) + 1 :] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{key}/")["Contents"]}
    assert "manifest.json" not in keys and not any(k.startswith("onnx/") for k in keys), sorted(keys)
    assert {"rejected/manifest.json", "rejected/onnx/fp32-cpu/model.onnx"} <= keys, sorted(keys)
    rejected = json.loads(s3.get_object(Bucket=bucket, Key=f"{key}/rejected/manifest.json")["Body"].read())
    assert rejected["promoted"] is False and rejected["gate"]["result"] == "Failed", rejected["gate"]
    assert {a["kind"] for a in status["artifacts"]} == {"adapter"}, status["artifacts"]

"""Puts what a FineTuneJob needs into the local cluster and S3: a namespace, the S3 credentials
Secret, a base model folder and the demo dataset. Used by `hack/demo` and the end-to-end tests."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import addons, settings

DATASETS_DIR = settings.REPO_ROOT / "examples" / "data"
DATASET_DIR = DATASETS_DIR / "tone"
# The examples' tasks: phrase -> tone (the main job) and request -> intent (a second adapter on one base).
TASKS = ("tone", "intent")
SECRET_NAME = "kubetune-s3"
# Tenant namespaces enforce Pod Security "restricted", as a platform team's would: the apiserver's
# built-in admission then refuses any pod of ours that does not meet it.
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        ),
    )


def ensure_namespace(core: client.CoreV1Api, namespace: str, env: dict[str, str]) -> None:
    """The namespace (Pod Security "restricted"), the Secret the example manifests reference for S3,
    and LocalQueue `kubetune` into the kit's ClusterQueue."""
    try:
        core.create_namespace({"metadata": {"name": namespace, "labels": RESTRICTED}})
    except ApiException as e:
        if e.status != 409:
            raise
        core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    try:
        client.CustomObjectsApi(core.api_client).create_namespaced_custom_object(
            addons.KUEUE_GROUP, addons.KUEUE_VERSION, namespace, "localqueues", addons.local_queue(namespace)
        )
    except ApiException as e:
        if e.status != 409:
            raise
    secret = {
        "metadata": {"name": SECRET_NAME},
        "stringData": {
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        },
    }
    try:
        core.create_namespaced_secret(namespace, secret)
    except ApiException as e:
        if e.status != 409:
            raise
        core.replace_namespaced_secret(SECRET_NAME, namespace, secret)


def upload_folder(s3: Any, folder: Path, bucket: str, prefix: str) -> int:
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}")
        count += 1
    return count


def upload_dataset(s3: Any, bucket: str, task: str = "tone") -> None:
    """examples/data/<task>/{train,eval}.jsonl to s3://<bucket>/datasets/<task>/."""
    for name in ("train.jsonl", "eval.jsonl"):
        s3.upload_file(str(DATASETS_DIR / task / name), bucket, f"datasets/{task}/{name}")


def delete_written_since(s3: Any, bucket: str, since: datetime.datetime) -> int:
    """Deletes the objects written at or after `since`: what a test session left in the bucket."""
    doomed = [
        {"Key": obj["Key"]}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if obj["LastModified"] >= since
    ]
    for start in range(0, len(doomed), 1000):  # the most one DeleteObjects call takes
        s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True})
    return len(doomed)


def main() -> int:
    """python -m devcluster.seed MODEL_DIR S3_PREFIX: upload a model folder and the demo dataset."""
    env = settings.cluster_env()
    s3 = s3_client(env)
    bucket = env["KUBETUNE_S3_BUCKET"]
    model_dir, prefix = Path(sys.argv[1]), sys.argv[2]
    n = upload_folder(s3, model_dir, bucket, prefix)
    for task in TASKS:
        upload_dataset(s3, bucket, task)
    print(
        f"uploaded {n} model files to s3://{bucket}/{prefix} and the {' and '.join(TASKS)} datasets to "
        f"s3://{bucket}/datasets/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

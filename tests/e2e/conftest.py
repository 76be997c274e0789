"""End-to-end fixtures: the operator installed with its Helm chart, a namespace with S3 credentials,
and base models in S3. Everything runs on the local cluster (hack/cluster up)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from operator_replicas import OPERATOR_NAMESPACE, leader_pod

from devcluster import model, release, seed
from support import wait_for


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def operator_release(core: client.CoreV1Api) -> Iterator[str]:
    """The operator as a platform team runs it: `helm install` of charts/kubetune, its own
    ServiceAccount and least-privilege RBAC, two replicas of which one leads."""
    release.install()
    wait_for(lambda: leader_pod(core), 120, "an operator replica to lead")
    yield OPERATOR_NAMESPACE
    release.uninstall()


@pytest.fixture
def workspace(core: client.CoreV1Api, cluster_env: dict[str, str]) -> Iterator[str]:
    """A namespace with the `kubetune-s3` Secret the examples reference."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    seed.ensure_namespace(core, name, cluster_env)
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def s3_seeded(
    s3: Any, cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The demo dataset and the tiny model in S3; returns their URIs."""
    bucket = cluster_env["KUBETUNE_S3_BUCKET"]
    tiny = model.write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    seed.upload_folder(s3, tiny, bucket, "models/tiny-random-llama")
    seed.upload_dataset(s3, bucket)
    return {
        "bucket": bucket,
        "readonly_bucket": cluster_env["KUBETUNE_S3_READONLY_BUCKET"],
        "tiny": f"s3://{bucket}/models/tiny-random-llama/",
        "train": f"s3://{bucket}/datasets/tone/train.jsonl",
        "eval": f"s3://{bucket}/datasets/tone/eval.jsonl",
    }

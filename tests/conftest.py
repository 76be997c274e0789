"""Fixtures for tests against the local cluster and S3 started by `hack/cluster up`.

When the cluster is not up these fixtures fail (never skip): a test that needs the real thing
must not pass without it.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from devcluster import model, release, seed, settings
from devcluster import s3 as s3_server
from operator_replicas import OPERATOR_NAMESPACE, leader_pod
from support import Secret, masked, wait_for


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """A failed comparison with a Secret, told without the text diff pytest makes of two strings."""
    if isinstance(left, Secret) or isinstance(right, Secret):
        return [f"{left!r} {op} {right!r}", "(a secret's value is not shown)"]
    return None


@pytest.fixture(scope="session")
def cluster_env() -> Iterator[dict[str, str]]:
    """The cluster's settings. At the end of the session what the session wrote to S3 is deleted, or
    every suite run would leave gigabytes of exported models in the local S3."""
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    env = _answering_cluster_env()
    yield env
    seed.delete_written_since(seed.s3_client(env), env["KUBETUNE_S3_BUCKET"], started)
    s3_server.reclaim_deleted_space(settings.load_ports())


def _answering_cluster_env() -> dict[str, str]:
    try:
        # The S3 secret key becomes a Secret: no failure output (locals with -l, a failed assert) shows it.
        env = masked(settings.cluster_env())
    except RuntimeError as e:
        pytest.fail(f"the local cluster is not set up: {e}")
    api = config.new_client_from_config(env["KUBECONFIG"])
    try:
        ready = api.call_api("GET", f"{api.configuration.host}/readyz").read()
    except Exception as e:  # any failure here means the cluster is down
        pytest.fail(f"the local cluster is not answering ({e}); start it with `hack/cluster up`")
    assert ready == b"ok", ready
    return env


@pytest.fixture(scope="session")
def api_client(cluster_env: dict[str, str]) -> client.ApiClient:
    return config.new_client_from_config(cluster_env["KUBECONFIG"])


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def rbac(api_client: client.ApiClient) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api_client)


@pytest.fixture(scope="session")
def s3(cluster_env: dict[str, str]):  # type: ignore[no-untyped-def]
    return seed.s3_client(cluster_env)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test; deleting it removes everything the test made."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


# ---- the operator as a platform team installs it (end-to-end and CLI tests) -------------------------
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

"""The local cluster from `hack/cluster up`: control plane, RBAC and S3 behave like the real thing.

These tests need the cluster running and fail (never skip) when it is not.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from devcluster import settings
from devcluster.settings import LIMITED_CREDENTIAL_VARIABLES
from support import masked

pytestmark = pytest.mark.cluster


def _expected_k8s_version() -> str:
    """The version the build script pins, so the test follows an upgrade of the script."""
    text = settings.BUILD_SCRIPT.read_text()
    match = re.search(r"K8S_VERSION=\$\{K8S_VERSION:-(v[0-9.]+)\}", text)
    assert match, f"no K8S_VERSION default in {settings.BUILD_SCRIPT}"
    return match.group(1)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    try:
        return masked(settings.cluster_env())
    except RuntimeError as e:
        pytest.fail(f"local cluster not set up ({e}); start it with `hack/cluster up`")


@pytest.fixture(scope="module")
def api(env: dict[str, str]) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=env["KUBECONFIG"])
    try:
        client.VersionApi(api_client).get_code(_request_timeout=5)
    except Exception as e:
        pytest.fail(f"apiserver at {settings.apiserver_url()} does not answer ({e}); run `hack/cluster up`")
    yield api_client
    api_client.close()


@pytest.fixture(scope="module")
def s3_env(env: dict[str, str]) -> dict[str, str]:
    try:
        _s3(env).head_bucket(Bucket=env["KUBETUNE_S3_BUCKET"])
    except Exception as e:
        pytest.fail(
            f"S3 at {env['AWS_ENDPOINT_URL']} has no bucket {env['KUBETUNE_S3_BUCKET']} ({e}); "
            "run `hack/cluster up`"
        )
    return env


def _s3(env: dict[str, str], secret: str | None = None, key_id: str | None = None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=key_id or env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(
            connect_timeout=3,
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def test_apiserver_reports_pinned_version(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().git_version == _expected_k8s_version()


def test_controller_manager_populates_namespaces(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    assert {"default", "kube-system"} <= {ns.metadata.name for ns in core.list_namespace().items}
    # Both come from controller-manager controllers, so they prove it is running with its identity.
    assert core.read_namespaced_service_account("default", "default").metadata.name == "default"
    ca = core.read_namespaced_config_map("kube-root-ca.crt", "default")
    assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]


def test_rbac_denies_identity_without_roles(api: client.ApiClient, env: dict[str, str]) -> None:
    # The admin may impersonate; a ServiceAccount no RoleBinding names must get 403 from RBAC.
    unprivileged = config.new_client_from_config(config_file=env["KUBECONFIG"])
    unprivileged.set_default_header("Impersonate-User", "system:serviceaccount:default:no-roles")
    try:
        with pytest.raises(ApiException) as denied:
            client.CoreV1Api(unprivileged).list_namespaced_secret("kube-system")
        assert denied.value.status == 403
    finally:
        unprivileged.close()
    # The same request as admin succeeds, so the 403 is RBAC and not a broken request.
    client.CoreV1Api(api).list_namespaced_secret("kube-system")


def test_s3_rejects_wrong_secret(s3_env: dict[str, str]) -> None:
    env = s3_env
    with pytest.raises(ClientError) as denied:
        _s3(env, secret=env["AWS_SECRET_ACCESS_KEY"] + "x").list_objects_v2(Bucket=env["KUBETUNE_S3_BUCKET"])
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_s3_round_trip(s3_env: dict[str, str]) -> None:
    env = s3_env
    s3 = _s3(env)
    bucket = env["KUBETUNE_S3_BUCKET"]
    key = f"tests/devcluster/{uuid.uuid4().hex}/blob.bin"
    body = uuid.uuid4().bytes * 1000
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key.rsplit("/", 1)[0])
        assert [o["Key"] for o in listed.get("Contents", [])] == [key]
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
    with pytest.raises(ClientError) as gone:
        s3.head_object(Bucket=bucket, Key=key)
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_the_limited_identity_reads_everything_and_writes_only_the_main_bucket(
    s3_env: dict[str, str],
) -> None:
    env = s3_env
    admin = _s3(env)
    limited = _s3(env, *(env[v] for v in reversed(LIMITED_CREDENTIAL_VARIABLES)))
    readonly, key = env["KUBETUNE_S3_READONLY_BUCKET"], f"tests/devcluster/{uuid.uuid4().hex}"
    admin.put_object(Bucket=readonly, Key=key, Body=b"shared")
    try:
        assert limited.get_object(Bucket=readonly, Key=key)["Body"].read() == b"shared"
        with pytest.raises(ClientError) as refused:
            limited.put_object(Bucket=readonly, Key=f"{key}-mine", Body=b"no")
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        limited.put_object(Bucket=env["KUBETUNE_S3_BUCKET"], Key=key, Body=b"yes")
        limited.delete_object(Bucket=env["KUBETUNE_S3_BUCKET"], Key=key)
    finally:
        admin.delete_object(Bucket=readonly, Key=key)

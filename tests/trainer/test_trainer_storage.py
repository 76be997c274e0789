"""Storage on local paths, the S3 error mapping, and (marked cluster) the real S3 server of the local
cluster kit, reached only through the standard AWS environment variables."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.storage import S3Location, Storage, _s3_errors, join_uri, parse_uri


def test_parse_and_join_uris() -> None:
    assert parse_uri("s3://bucket/a/b.gguf") == S3Location("bucket", "a/b.gguf")
    assert parse_uri("s3://bucket") == S3Location("bucket", "")
    assert parse_uri("/data/x") == Path("/data/x")
    assert join_uri("s3://b/runs/x/", "adapter", "a.json") == "s3://b/runs/x/adapter/a.json"
    assert join_uri("s3://b", "manifest.json") == "s3://b/manifest.json"
    assert join_uri("/out", "adapter") == "/out/adapter"
    with pytest.raises(TrainerError) as info:
        parse_uri("gs://bucket/x")
    assert info.value.exit_code == ExitCode.STORAGE


def test_local_upload_dir_lists_sha256_and_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    entries = Storage().upload_dir(src, str(tmp_path / "dst"))
    assert [e.path for e in entries] == ["a.txt", "sub/b.bin"]
    assert entries[0].sha256 == hashlib.sha256(b"hello").hexdigest() and entries[0].size == 5
    assert (tmp_path / "dst" / "sub" / "b.bin").read_bytes() == b"\x00" * 10
    assert entries[1].uri == str(tmp_path / "dst" / "sub" / "b.bin")


def test_local_download_uses_path_in_place_and_reports_missing(tmp_path: Path) -> None:
    assert Storage().download(str(tmp_path), tmp_path / "unused") == tmp_path
    with pytest.raises(TrainerError, match="does not exist") as info:
        Storage().download(str(tmp_path / "missing"), tmp_path / "unused")
    assert info.value.exit_code == ExitCode.STORAGE


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("NoSuchBucket", "the bucket does not exist"),
        ("NoSuchKey", "the object does not exist"),
        ("AccessDenied", "access denied"),
        ("SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"),
        ("InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"),
    ],
)
def test_s3_client_errors_become_storage_errors(code: str, expected: str) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(TrainerError) as info, _s3_errors("download", "s3://b/k"):
        raise ClientError({"Error": {"Code": code, "Message": "server text"}}, "GetObject")
    assert info.value.exit_code == ExitCode.STORAGE
    assert "s3://b/k" in info.value.message and code in info.value.message and expected in info.value.message


def test_missing_credentials_become_storage_error() -> None:
    from botocore.exceptions import NoCredentialsError

    with pytest.raises(TrainerError, match="AWS_ACCESS_KEY_ID"), _s3_errors("list", "s3://b/"):
        raise NoCredentialsError()


@pytest.fixture
def s3_env(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the standard AWS variables at the local S3 server; returns its bucket."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster_env[name])
    monkeypatch.setenv("AWS_DEFAULT_REGION", cluster_env.get("AWS_DEFAULT_REGION", "us-east-1"))
    return cluster_env["KUBETUNE_S3_BUCKET"]


@pytest.mark.cluster
def test_s3_round_trip_and_errors(tmp_path: Path, s3_env: str) -> None:
    prefix = f"s3://{s3_env}/trainer-tests/{uuid.uuid4().hex}"
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "model.gguf").write_bytes(b"GGUF" + os.urandom(1000))
    (src / "nested" / "config.json").write_text("{}")
    storage = Storage()
    entries = storage.upload_dir(src, prefix)
    assert {e.uri for e in entries} == {f"{prefix}/model.gguf", f"{prefix}/nested/config.json"}

    folder = storage.download(prefix, tmp_path / "folder")
    assert (folder / "nested" / "config.json").read_text() == "{}"
    single = storage.download(f"{prefix}/model.gguf", tmp_path / "single")
    assert single.name == "model.gguf" and single.read_bytes() == (src / "model.gguf").read_bytes()

    with pytest.raises(TrainerError, match="nothing found") as info:
        storage.download(f"{prefix}/missing", tmp_path / "missing")
    assert info.value.exit_code == ExitCode.STORAGE
    with pytest.raises(TrainerError, match="NoSuchBucket"):
        storage.download(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x", tmp_path / "nb")


@pytest.mark.cluster
def test_s3_wrong_secret_is_a_storage_error(
    tmp_path: Path, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong")
    with pytest.raises(TrainerError, match=r"SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied") as info:
        Storage().download(f"s3://{s3_env}/x", tmp_path)
    assert info.value.exit_code == ExitCode.STORAGE

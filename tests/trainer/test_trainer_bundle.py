"""`python -m kubetune_trainer.bundle verify`: a bundle on the local cluster's real S3 server checks
out, and a deleted or overwritten object is named by its URI; a manifest it cannot read is refused."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetune_api.manifest import SCHEMA_VERSION, ArtifactRecord, FileRecord, Manifest
from kubetune_trainer import bundle
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.storage import Storage, parse_uri

DIGEST = "ab" * 32
# Artifact folder (relative to the run) -> files (relative to the folder) and their bytes.
BUNDLE_FILES = {
    "adapter": {"adapter_config.json": b'{"r": 8}', "weights/adapter_model.safetensors": b"\x01" * 4096},
    "onnx/int4-cpu": {"model.onnx": b"onnx-graph" * 100, "genai_config.json": b"{}"},
}
KINDS = {"adapter": "adapter", "onnx/int4-cpu": "onnx"}


def make_manifest(artifacts: list[ArtifactRecord], **fields: Any) -> Manifest:
    gate = {"result": "None"}
    document = {
        "schemaVersion": SCHEMA_VERSION,
        "name": "tone",
        "namespace": "test",
        "runId": "run-1",
        "specHash": DIGEST,
        "createdAt": "2026-01-02T03:04:05Z",
        "promoted": True,
        "baseModel": {"uri": "s3://models/tiny/", "sha256": DIGEST},
        "method": "lora",
        "dataset": {},
        "export": {},
        "libraries": {"torch": "2.5.1"},
        "metrics": {},
        "gate": gate,
        "targets": [],
        "artifacts": [a.model_dump(mode="json", by_alias=True) for a in artifacts],
        **fields,
    }
    return Manifest.model_validate(document)


def write_json(path: Path, document: Any) -> str:
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture
def s3_env(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the standard AWS variables at the local S3 server; returns its bucket."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster_env[name])
    monkeypatch.setenv("AWS_DEFAULT_REGION", cluster_env.get("AWS_DEFAULT_REGION", "us-east-1"))
    return cluster_env["KUBETUNE_S3_BUCKET"]


@pytest.fixture
def stored_bundle(s3_env: str, tmp_path: Path) -> Iterator[str]:
    """A small bundle uploaded under a fresh prefix, and its manifest.json; returns the manifest's URI."""
    storage = Storage()
    run = f"s3://{s3_env}/bundle-tests/{uuid.uuid4().hex}/runs/tone"
    artifacts = []
    for folder, files in BUNDLE_FILES.items():
        source = tmp_path / "source" / folder
        for relative, data in files.items():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            (source / relative).write_bytes(data)
        entries = storage.upload_dir(source, f"{run}/{folder}")
        records = [FileRecord(path=e.path, uri=e.uri, size=e.size, sha256=e.sha256) for e in entries]
        artifacts.append(ArtifactRecord(kind=KINDS[folder], uri=f"{run}/{folder}", files=records))
    manifest = make_manifest(artifacts)
    manifest_file = tmp_path / "manifest.json"
    write_json(manifest_file, manifest.model_dump(mode="json", by_alias=True))
    storage.upload_file(manifest_file, f"{run}/manifest.json")
    yield f"{run}/manifest.json"
    storage.delete_folder(run)


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    """Exit status, stdout lines and stderr of `bundle verify` run in this process."""
    code = bundle.main(["verify", *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def object_key(uri: str) -> str:
    location = parse_uri(uri)
    assert not isinstance(location, Path)
    return location.key


@pytest.mark.cluster
def test_an_intact_bundle_verifies(stored_bundle: str) -> None:
    # The documented command, as a user runs it: credentials from the AWS variables only.
    command = [sys.executable, "-m", "kubetune_trainer.bundle", "verify", stored_bundle]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(len(data) for files in BUNDLE_FILES.values() for data in files.values())
    assert result.stdout.splitlines() == [
        f"checked 4 files, {total} bytes: 0 problems (0 missing, 0 corrupt)"
    ]


@pytest.mark.cluster
def test_a_deleted_object_is_named_as_missing(
    stored_bundle: str, s3: Any, s3_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = stored_bundle.replace("manifest.json", "onnx/int4-cpu/model.onnx")
    s3.delete_object(Bucket=s3_env, Key=object_key(gone))
    code, lines, _ = verify(capsys, stored_bundle)
    assert code == 1
    assert lines[:-1] == [f"missing  {gone}: no such object (404)"]
    # Every other file was still checked.
    assert lines[-1].startswith("checked 4 files,") and "1 problems (1 missing, 0 corrupt)" in lines[-1]


@pytest.mark.cluster
def test_overwritten_objects_are_named_as_corrupt(
    stored_bundle: str, s3: Any, s3_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    same_size = stored_bundle.replace("manifest.json", "adapter/weights/adapter_model.safetensors")
    other_size = stored_bundle.replace("manifest.json", "onnx/int4-cpu/genai_config.json")
    s3.put_object(Bucket=s3_env, Key=object_key(same_size), Body=b"\x02" * 4096)
    s3.put_object(Bucket=s3_env, Key=object_key(other_size), Body=b'{"x": 1}')
    code, lines, _ = verify(capsys, stored_bundle)
    assert code == 1
    problems = dict(line.split(": ", 1) for line in lines[:-1])
    assert set(problems) == {f"corrupt  {same_size}", f"corrupt  {other_size}"}
    assert problems[f"corrupt  {other_size}"] == "size expected 2, actual 8"
    recorded = hashlib.sha256(BUNDLE_FILES["adapter"]["weights/adapter_model.safetensors"]).hexdigest()
    actual = hashlib.sha256(b"\x02" * 4096).hexdigest()
    assert problems[f"corrupt  {same_size}"] == f"sha256 expected {recorded}, actual {actual}"
    assert lines[-1].endswith("2 problems (0 missing, 2 corrupt)")


@pytest.mark.cluster
def test_download_keeps_the_files_at_their_folders(
    stored_bundle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "bundle"
    code, lines, _ = verify(capsys, stored_bundle, "--download", str(target))
    assert code == 0, lines
    stored = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    expected = {
        f"{folder}/{rel}": data for folder, files in BUNDLE_FILES.items() for rel, data in files.items()
    }
    assert stored == expected


@pytest.mark.cluster
def test_wrong_credentials_are_a_usage_error(
    stored_bundle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "definitely-wrong")
    code, lines, err = verify(capsys, stored_bundle)
    assert code == 2 and lines == []
    assert f"cannot verify {stored_bundle}" in err
    assert any(word in err for word in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")), err


# --- without S3 ---------------------------------------------------------------------------------------


def test_an_unknown_schema_version_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = make_manifest([]).model_dump(mode="json", by_alias=True)
    document["schemaVersion"] = "kubetune.dev/manifest/v2"
    path = write_json(tmp_path / "manifest.json", document)
    code, lines, err = verify(capsys, path)
    assert code == 2 and lines == []
    assert "schemaVersion 'kubetune.dev/manifest/v2'; this verifier reads kubetune.dev/manifest/v1" in err
    with pytest.raises(TrainerError) as info:
        bundle.parse_manifest(json.dumps(document), path)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is not JSON"),
        ('{"schemaVersion": "kubetune.dev/manifest/v1", "name": "x"}', "artifacts: Field required"),
        ("[]", "is not a kubetune.dev/manifest/v1 manifest"),
    ],
    ids=["not-json", "missing-fields", "not-an-object"],
)
def test_a_manifest_that_does_not_parse_is_refused(
    text: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text)
    code, lines, err = verify(capsys, str(path))
    assert code == 2 and lines == []
    assert expected in err and str(path) in err


def test_a_missing_manifest_and_bad_usage_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = verify(capsys, str(tmp_path / "nowhere.json"))
    assert code == 2 and "no manifest at" in err
    with pytest.raises(SystemExit) as info:
        bundle.main([])
    assert info.value.code == 2


def test_local_folders_mirror_the_storage_below_the_common_folder() -> None:
    run = "s3://b/out/ns/tone/run-1"

    def folders(manifest_uri: str, *uris: str) -> list[str]:
        artifacts = [ArtifactRecord(kind="onnx", uri=uri, files=[]) for uri in uris]
        return [str(p) for p in bundle.local_folders(make_manifest(artifacts), manifest_uri)]

    assert folders(f"{run}/manifest.json", f"{run}/adapter/", f"{run}/onnx/int4-cpu") == [
        "adapter",
        "onnx/int4-cpu",
    ]
    # A rejected bundle: the trainer's adapter stays at the run, the export's folders are under rejected/.
    assert folders(f"{run}/rejected/manifest.json", f"{run}/adapter", f"{run}/rejected/onnx/int4-cpu") == [
        "adapter",
        "rejected/onnx/int4-cpu",
    ]
    # A shared base outside the run: DIR mirrors the output prefix that holds both.
    assert folders(f"{run}/manifest.json", f"{run}/onnx-adapter/int4-cpu", "s3://b/out/onnx-bases/k1") == [
        "ns/tone/run-1/onnx-adapter/int4-cpu",
        "onnx-bases/k1",
    ]
    # Another bucket: nothing in common but the scheme.
    assert folders(f"{run}/manifest.json", f"{run}/onnx", "s3://bases/k1") == [
        "b/out/ns/tone/run-1/onnx",
        "bases/k1",
    ]


def test_a_path_escaping_its_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = FileRecord(path="../../etc/passwd", uri=str(tmp_path / "x"), size=1, sha256=DIGEST)
    manifest = make_manifest([ArtifactRecord(kind="adapter", uri=str(tmp_path / "adapter"), files=[record])])
    path = write_json(tmp_path / "manifest.json", manifest.model_dump(mode="json", by_alias=True))
    code, _, err = verify(capsys, path, "--download", str(tmp_path / "out"))
    assert code == 2 and "has a path outside its folder" in err

"""Integrity and no silent loss, against the local cluster's real S3: every read of a run's own files is
checked against the sha256 recorded when they were written, a denied read is never "missing", write
access is checked at start, and spec.output.keepCheckpoints is applied after success."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer import integrity
from kubetune_trainer.checkpoints import COMPLETE_MARKER, CheckpointStore
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.storage import PROBE_NAME, Storage, parse_uri


@pytest.fixture
def s3_env(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the standard AWS variables at the local S3 server; returns its bucket."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster_env[name])
    monkeypatch.setenv("AWS_DEFAULT_REGION", cluster_env.get("AWS_DEFAULT_REGION", "us-east-1"))
    return cluster_env["KUBETUNE_S3_BUCKET"]


@pytest.fixture
def run_root(s3_env: str) -> str:
    return f"s3://{s3_env}/trainer-tests/integrity-{uuid.uuid4().hex}"


def _checkpoint_folder(root: Path, step: int) -> Path:
    folder = root / f"local-{step}"
    (folder / "nested").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(bytes([step]) * 100)
    (folder / "nested" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def _overwrite(s3: Any, uri: str, data: bytes) -> None:
    """Corrupt a stored object in place, as a bad disk, a bad copy or another writer would."""
    location = parse_uri(uri)
    s3.put_object(Bucket=location.bucket, Key=location.key, Body=data)


# ---- 1. sha256 on every read -------------------------------------------------------------------------


@pytest.mark.cluster
def test_a_checkpoint_records_its_digests_last_and_is_verified_on_resume(
    tmp_path: Path, run_root: str, s3: Any
) -> None:
    store = CheckpointStore(Storage(), run_root)
    stored = store.upload(_checkpoint_folder(tmp_path, 10), 10, tmp_path / "scratch")
    marker = json.loads(Storage().read_if_exists(f"{stored.uri}/{COMPLETE_MARKER}", tmp_path / "m") or "")
    assert set(marker["files"]) == {"adapter_model.safetensors", "nested/trainer_state.json"}
    local = store.download(stored, tmp_path / "restored")
    assert (local / "adapter_model.safetensors").read_bytes() == bytes([10]) * 100

    _overwrite(s3, f"{stored.uri}/nested/trainer_state.json", b'{"global_step": 99}')
    with pytest.raises(TrainerError) as info:
        store.download(stored, tmp_path / "restored-again")
    assert info.value.exit_code == ExitCode.STORAGE
    assert f"{stored.uri}/nested/trainer_state.json is corrupt" in info.value.message
    # The failed download leaves nothing the Trainer (or this pod's other processes) would take.
    assert not (tmp_path / "restored-again" / "checkpoint-10").exists()


@pytest.mark.cluster
def test_a_checkpoint_with_a_missing_file_or_no_digests_is_refused(
    tmp_path: Path, run_root: str, s3: Any
) -> None:
    store = CheckpointStore(Storage(), run_root)
    stored = store.upload(_checkpoint_folder(tmp_path, 20), 20, tmp_path / "scratch")
    Storage().delete_file(f"{stored.uri}/adapter_model.safetensors")
    with pytest.raises(TrainerError, match=r"adapter_model\.safetensors is recorded but missing"):
        store.download(stored, tmp_path / "a")
    # A marker without a sha256 record (an empty marker, as written before) cannot vouch for anything.
    _overwrite(s3, f"{stored.uri}/{COMPLETE_MARKER}", b"")
    with pytest.raises(TrainerError, match=f"{stored.uri}/{COMPLETE_MARKER} holds no sha256 record"):
        store.download(stored, tmp_path / "b")


@pytest.mark.cluster
def test_the_export_verifies_the_trained_adapter_against_the_training_result(
    tmp_path: Path, run_root: str, s3: Any, make_input: Any
) -> None:
    from kubetune_trainer.export import fetch_trained_folder
    from kubetune_trainer.publish import TRAINED_FILES

    job = make_input("/models/unused", run_root)
    storage = Storage()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights" * 50)
    (adapter / "adapter_config.json").write_text("{}")
    entries = storage.upload_dir(adapter, job.run.layout.folder("adapter"))
    result = {"steps": 3, TRAINED_FILES: integrity.record(entries)}
    storage.upload_bytes(json.dumps(result).encode(), job.run.layout.result, tmp_path / "scratch")

    fetched = fetch_trained_folder(job, "adapter", storage, tmp_path / "w1")
    assert (fetched / "adapter_model.safetensors").read_bytes() == b"weights" * 50

    corrupt_uri = f"{job.run.layout.folder('adapter')}/adapter_model.safetensors"
    _overwrite(s3, corrupt_uri, b"weights" * 49 + b"WEIGHT!")
    with pytest.raises(TrainerError) as info:
        fetch_trained_folder(job, "adapter", storage, tmp_path / "w2")
    assert info.value.exit_code == ExitCode.STORAGE
    assert f"{corrupt_uri} is corrupt" in info.value.message

    # A result without the record (or no result at all) is no ground to trust the folder.
    storage.upload_bytes(json.dumps({"steps": 3}).encode(), job.run.layout.result, tmp_path / "scratch")
    with pytest.raises(TrainerError, match="holds no sha256 record"):
        fetch_trained_folder(job, "adapter", storage, tmp_path / "w3")
    storage.delete_file(job.run.layout.result)
    with pytest.raises(TrainerError, match="has not finished training"):
        fetch_trained_folder(job, "adapter", storage, tmp_path / "w4")


# ---- 3. write access checked at start; 4. a 403 is never "missing" -----------------------------------


@pytest.mark.cluster
def test_write_access_is_probed_and_the_probe_removed(tmp_path: Path, run_root: str) -> None:
    storage = Storage()
    storage.check_writable(run_root, tmp_path)
    assert storage.list_folder(run_root) == []  # the probe is gone


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("variable", "value", "code"),
    [
        ("AWS_SECRET_ACCESS_KEY", "definitely-wrong", "SignatureDoesNotMatch"),
        ("AWS_ACCESS_KEY_ID", "KTNOSUCHKEY000000000", "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_a_denied_request_is_an_error_never_missing(
    tmp_path: Path, run_root: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, code: str
) -> None:
    """The local S3 has one identity, so the denial comes from wrong credentials (403s of the server)."""
    result_uri = f"{run_root}/training_result.json"
    Storage().upload_bytes(b'{"steps": 1}', result_uri, tmp_path / "up")
    monkeypatch.setenv(variable, value)
    denied = Storage()
    # read_if_exists once answered None here, and a trained run would have been trained again.
    with pytest.raises(TrainerError) as info:
        denied.read_if_exists(result_uri, tmp_path)
    assert info.value.exit_code == ExitCode.STORAGE
    assert result_uri in info.value.message and code in info.value.message
    # Also for a key that does not exist: denied is not missing.
    with pytest.raises(TrainerError, match=code):
        denied.read_if_exists(f"{run_root}/no-such-file.json", tmp_path)
    with pytest.raises(TrainerError, match=code):
        CheckpointStore(denied, run_root).complete()
    with pytest.raises(TrainerError) as probe:
        denied.check_writable(run_root, tmp_path)
    assert f"{run_root}/{PROBE_NAME}" in probe.value.message and code in probe.value.message


@pytest.mark.cluster
def test_a_missing_object_is_still_none(tmp_path: Path, run_root: str) -> None:
    assert Storage().read_if_exists(f"{run_root}/training_result.json", tmp_path) is None


# ---- 7. spec.output.keepCheckpoints ------------------------------------------------------------------


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("keep", "best", "left"),
    [
        ("all", 10, [10, 20, 30]),
        ("best", 10, [10]),
        ("best", None, [30]),  # no early stopping: the last one
        ("best", 5, [30]),  # a best step no longer stored: the last one
        ("none", 10, []),
    ],
)
def test_keep_checkpoints_after_success(
    tmp_path: Path, run_root: str, keep: str, best: int | None, left: list[int]
) -> None:
    storage = Storage()
    store = CheckpointStore(storage, run_root)
    for step in (10, 20, 30):
        store.upload(_checkpoint_folder(tmp_path / str(step), step), step, tmp_path / "scratch")
    store.retain(keep, best)
    assert [c.step for c in store.complete()] == left
    # Deleted means deleted: no file of another checkpoint is left behind.
    folders = {path.partition("/")[0] for path in storage.list_folder(store.uri)}
    assert folders == {f"checkpoint-{step}" for step in left}

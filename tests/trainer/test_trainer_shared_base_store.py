"""Storing a shared base on the real S3 server: two jobs that finish together store it once (the other
reuses that copy), a claim that is never completed holds only for its time, and a retried export takes
its own run's claim over at once."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_trainer_storage import s3_env  # noqa: F401  (the fixture)

from kubetune_api.layout import BASE_RECORD_FILE, join_uri
from kubetune_trainer import shared_base
from kubetune_trainer.shared_base import SharedBase
from kubetune_trainer.storage import Storage

pytestmark = pytest.mark.cluster


def built_base(folder: Path, uri: str) -> SharedBase:
    """A base as an export builds it: the same files under its own local folder."""
    (folder / "model").mkdir(parents=True)
    (folder / "work").mkdir()
    (folder / "model" / "model.onnx").write_bytes(b"onnx" * 1000)
    (folder / "model" / "genai_config.json").write_text("{}")
    key = uri.rsplit("/", 1)[1]
    return SharedBase(key, uri, folder / "model", {"target": "int4"}, reused=False)


def test_two_jobs_storing_one_base_together_store_it_once(tmp_path: Path, s3_env: str) -> None:  # noqa: F811
    uri = f"s3://{s3_env}/trainer-tests/{uuid.uuid4().hex}/bases/k{uuid.uuid4().hex[:8]}"
    start = threading.Barrier(2)
    results: dict[str, Any] = {}

    def job(name: str) -> None:
        base = built_base(tmp_path / name, uri)
        start.wait()
        try:
            results[name] = shared_base.store(Storage(), base, tmp_path / name / "work", f"runs/{name}")
        except Exception as exc:  # shown by the assertion below
            results[name] = exc

    threads = [threading.Thread(target=job, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert all(isinstance(r, tuple) for r in results.values()), results
    assert sorted(found for _, found in results.values()) == [False, True], results
    [(entries_a, _), (entries_b, _)] = results.values()
    assert [(e.path, e.sha256) for e in entries_a] == [(e.path, e.sha256) for e in entries_b]
    storage = Storage()
    record = json.loads(storage.read_if_exists(join_uri(uri, BASE_RECORD_FILE), tmp_path / "r") or "{}")
    assert set(record["files"]) == {"model.onnx", "genai_config.json"}
    # The base is found complete and verified afterwards; the claim lives outside its folder.
    stored = shared_base.find_stored(storage, uri, record["key"], tmp_path / "find")
    assert stored is not None and stored.reused
    assert not shared_base.claim_uri(uri).startswith(uri + "/")


def test_a_claim_never_completed_holds_only_for_its_time(
    tmp_path: Path,
    s3_env: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_base, "CLAIM_WAIT_SECONDS", 3.0)
    monkeypatch.setattr(shared_base, "CLAIM_POLL_SECONDS", 0.5)
    uri = f"s3://{s3_env}/trainer-tests/{uuid.uuid4().hex}/bases/k{uuid.uuid4().hex[:8]}"
    storage = Storage()
    # Another job claimed the base and died before storing it.
    claim = json.dumps({"token": "gone", "claimant": "runs/gone", "at": time.time()}).encode()
    storage.upload_bytes(claim, shared_base.claim_uri(uri), tmp_path / "claim")

    base = built_base(tmp_path / "a", uri)
    entries, found = shared_base.store(storage, base, tmp_path / "a" / "work", "runs/a")

    assert not found and {e.path for e in entries} == {"model.onnx", "genai_config.json", BASE_RECORD_FILE}
    assert storage.read_if_exists(join_uri(uri, BASE_RECORD_FILE), tmp_path / "r") is not None


def test_a_retried_export_takes_its_own_runs_claim_over_at_once(
    tmp_path: Path,
    s3_env: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Short enough that waiting the claim out fails this test in a minute, not ten.
    monkeypatch.setattr(shared_base, "CLAIM_WAIT_SECONDS", 60.0)
    monkeypatch.setattr(shared_base, "CLAIM_POLL_SECONDS", 0.5)
    uri = f"s3://{s3_env}/trainer-tests/{uuid.uuid4().hex}/bases/k{uuid.uuid4().hex[:8]}"
    storage = Storage()
    # This run's first export attempt claimed the base and died before storing it.
    claim = json.dumps({"token": "first-attempt", "claimant": "runs/a", "at": time.time()}).encode()
    storage.upload_bytes(claim, shared_base.claim_uri(uri), tmp_path / "claim")

    with caplog.at_level(logging.INFO, logger=shared_base.log.name):
        base = built_base(tmp_path / "a", uri)
        entries, found = shared_base.store(storage, base, tmp_path / "a" / "work", "runs/a")

    assert not found and {e.path for e in entries} == {"model.onnx", "genai_config.json", BASE_RECORD_FILE}
    assert "this run's own earlier claim" in caplog.text
    assert "another export is storing" not in caplog.text  # never waited on its own claim

"""`kubetune pull` and `kubetune generate` against a finished tiny FineTuneJob: its bundle downloaded and
verified from the local S3 store, a tampered object refused, and a prompt answered by the fp32 ONNX
model on this machine."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

Kubetune = Callable[..., subprocess.CompletedProcess[str]]
# No credentials of the caller's own: boto3's chain finds nothing (and asks no instance metadata).
NO_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def manifest_of(job: Any, s3: Any) -> dict[str, Any]:
    uri = next(a["uri"] for a in job.obj["status"]["artifacts"] if a["kind"] == "manifest")
    bucket, key = location(uri)
    return dict(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def pulled_files(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file()
    }


def expected_files(manifest: dict[str, Any], kinds: set[str] | None = None) -> dict[str, str]:
    """Local path -> sha256 of every file of the artifacts (each folder relative to the run's)."""
    out = {}
    for artifact in manifest["artifacts"]:
        if kinds and artifact["kind"] not in kinds:
            continue
        folder = artifact["uri"].rstrip("/").split(f"/{manifest['runId']}/", 1)[1]
        for f in artifact["files"]:
            out[f"{folder}/{f['path']}"] = f["sha256"]
    return out


def test_pull_downloads_and_verifies_the_bundle(
    kubetune: Kubetune, finished_job: Any, s3: Any, tmp_path: Path
) -> None:
    manifest = manifest_of(finished_job, s3)
    done = kubetune("-n", finished_job.namespace, "pull", finished_job.name, str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stderr
    files = pulled_files(tmp_path / "bundle")
    raw_manifest = (tmp_path / "bundle" / "manifest.json").read_bytes()
    manifest_sha = next(
        a["sha256"] for a in finished_job.obj["status"]["artifacts"] if a["kind"] == "manifest"
    )
    assert hashlib.sha256(raw_manifest).hexdigest() == manifest_sha
    assert files == {**expected_files(manifest), "manifest.json": manifest_sha}
    assert "onnx/fp32-cpu/model.onnx" in files
    assert f"of run {manifest['runId']}, verified" in done.stdout

    # Only one target's ONNX model.
    onnx = kubetune(
        "-n", finished_job.namespace, "pull", finished_job.name, str(tmp_path / "onnx"),
        "--kind", "onnx", "--target", "fp32-cpu",
    )  # fmt: skip
    assert onnx.returncode == 0, onnx.stderr
    assert pulled_files(tmp_path / "onnx") == {
        **expected_files(manifest, {"onnx"}),
        "manifest.json": manifest_sha,
    }

    unknown = kubetune(
        "-n", finished_job.namespace, "pull", finished_job.name, str(tmp_path / "x"), "--target", "int4-cpu"
    )
    assert unknown.returncode == 5, unknown
    assert "has no artifact of target int4-cpu; it holds: " in unknown.stderr
    assert "onnx/fp32-cpu" in unknown.stderr


def test_pull_refuses_a_tampered_object(
    kubetune: Kubetune, finished_job: Any, s3: Any, tmp_path: Path
) -> None:
    manifest = manifest_of(finished_job, s3)
    onnx = next(a for a in manifest["artifacts"] if a["kind"] == "onnx")
    record = next(f for f in onnx["files"] if f["path"] == "genai_config.json")
    bucket, key = location(record["uri"])
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    # Same size, one byte changed: only the checksum can tell.
    tampered = original[:-2] + (b" " if original[-2:-1] != b" " else b"\t") + original[-1:]
    s3.put_object(Bucket=bucket, Key=key, Body=tampered)
    try:
        done = kubetune("-n", finished_job.namespace, "pull", finished_job.name, str(tmp_path / "bundle"))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert done.returncode == 5, done
    message = " ".join(done.stderr.split())
    assert f"genai_config.json: sha256 {hashlib.sha256(tampered).hexdigest()} does not match" in message
    assert record["sha256"] in message and record["uri"] in message
    # Nothing unverified looks complete: neither the file nor the manifest, and no partial download.
    local = tmp_path / "bundle"
    assert not (local / "onnx" / "fp32-cpu" / "genai_config.json").exists()
    assert not (local / "manifest.json").exists()
    assert not [p for p in local.rglob("*") if p.name.endswith(".kubetune-partial")]

    # A missing object is named too.
    s3.delete_object(Bucket=bucket, Key=key)
    try:
        missing = kubetune("-n", finished_job.namespace, "pull", finished_job.name, str(tmp_path / "again"))
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)
    assert missing.returncode == 5, missing
    assert f"genai_config.json is missing: {record['uri']} does not exist" in " ".join(missing.stderr.split())


def test_pull_with_the_jobs_secret(kubetune: Kubetune, finished_job: Any, tmp_path: Path) -> None:
    args = ("-n", finished_job.namespace, "pull", finished_job.name)
    refused = kubetune(*args, str(tmp_path / "a"), env=NO_AWS_CREDENTIALS)
    assert refused.returncode == 5, refused
    assert "no S3 credentials" in refused.stderr and "--credentials-from-secret" in refused.stderr

    done = kubetune(*args, str(tmp_path / "b"), "--credentials-from-secret", env=NO_AWS_CREDENTIALS)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b" / "manifest.json").is_file()


def test_generate_answers_with_the_fp32_onnx_model(
    kubetune: Kubetune, finished_job: Any, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = (
        "-n",
        finished_job.namespace,
        "generate",
        finished_job.name,
        "I love this",
        "--max-new-tokens",
        "6",
    )
    done = kubetune(*args, "--show-prompt", env={"KUBETUNE_CACHE_DIR": str(cache)}, timeout=300)
    assert done.returncode == 0, done.stderr
    # The example's template, "Phrase: {phrase}\nTone: {tone}", up to the answer field.
    assert "prompt (text):\nPhrase: I love this\nTone:\n" in done.stderr, done.stderr
    run_id = finished_job.obj["status"]["runId"]
    model_dir = cache / finished_job.namespace / finished_job.name / run_id / "onnx" / "fp32-cpu"
    assert (model_dir / "model.onnx").is_file()

    # The trainer's own generation on the same model and prompt gives the same answer.
    from transformers import AutoTokenizer

    from kubetune_trainer.generation import encode, ort_greedy, ort_model

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens = ort_greedy(
        ort_model(model_dir), [encode(tokenizer, "Phrase: I love this\nTone:")], 6, {tokenizer.eos_token_id}
    )
    expected = tokenizer.decode(tokens[0], skip_special_tokens=True).strip()
    assert tokens[0], "the model generated nothing to compare"
    assert done.stdout.rstrip("\n") == expected

    # Again from the cache, the same answer.
    again = kubetune(*args, env={"KUBETUNE_CACHE_DIR": str(cache)}, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout

    other = kubetune(*args, "--target", "int4-cpu", env={"KUBETUNE_CACHE_DIR": str(cache)})
    assert other.returncode == 2, other
    assert "has no ONNX target int4-cpu; it exported: fp32-cpu" in other.stderr

"""Train and export the tiny model with every URI on the local cluster's real S3 server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from kubetune_trainer.progress import JsonFileSink
from kubetune_trainer.storage import S3Location, Storage, parse_uri


@pytest.fixture
def s3_env(cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cluster_env[name])
    monkeypatch.setenv("AWS_DEFAULT_REGION", cluster_env.get("AWS_DEFAULT_REGION", "us-east-1"))
    return cluster_env["KUBETUNE_S3_BUCKET"]


@pytest.mark.cluster
def test_train_and_export_through_s3(
    tmp_path: Path, s3_env: str, tiny_model_dir: Path, tone_dir: Path, make_input
) -> None:
    from kubetune_trainer.export import export
    from kubetune_trainer.train import train

    root = f"s3://{s3_env}/trainer-tests/{uuid.uuid4().hex}"
    storage = Storage()
    storage.upload_dir(tiny_model_dir, f"{root}/models/tiny")
    storage.upload_file(tone_dir / "train.jsonl", f"{root}/data/train.jsonl")
    job = make_input(
        f"{root}/models/tiny/",
        f"{root}/runs/tone",
        dataset={
            "trainUri": f"{root}/data/train.jsonl",
            "evalRatio": 0.1,
            "textTemplate": "{phrase} => {tone}",
        },
        training={"maxSteps": 5, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 48},
        export={"targets": [{"precision": "fp32"}], "evalSamples": 4},
    )
    metrics = train(job, tmp_path / "train", JsonFileSink(tmp_path / "progress.jsonl"))
    assert metrics["steps"] == 5 and metrics["evalSamples"] == 24
    manifest = export(job, tmp_path / "export").manifest

    stored = json.loads(storage.download(f"{root}/runs/tone/manifest.json", tmp_path / "m").read_text())
    assert stored["specHash"] == manifest.spec_hash == job.spec.spec_digest()
    location = parse_uri(f"{root}/runs/tone/")
    assert isinstance(location, S3Location)
    keys = set(storage.list_keys(location))
    folders = {a["kind"]: a for a in stored["artifacts"]}
    for kind, folder in (("adapter", "adapter"), ("merged", "merged"), ("onnx", "onnx/fp32-cpu")):
        assert folders[kind]["uri"] == f"{root}/runs/tone/{folder}"
        for entry in folders[kind]["files"]:
            assert entry["uri"].startswith(f"{root}/runs/tone/{folder}/")
            assert entry["uri"].removeprefix(f"s3://{s3_env}/") in keys

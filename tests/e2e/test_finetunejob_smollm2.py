"""The main job with the real model: SmolLM2-135M learns phrase -> tone through a FineTuneJob, and
the int4 ONNX model it exports answers held-out phrases correctly where the base model does not."""

from __future__ import annotations

import json
import math
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devcluster import model, seed
from e2e_support import EXAMPLES, StatusRecorder, apply_ftj, wait_phase
from kubetune_api import RunLayout

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EVAL_ROWS = [json.loads(line) for line in (seed.DATASET_DIR / "eval.jsonl").read_text().splitlines()]


def download_prefix(s3: Any, uri: str, target: Path) -> Path:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))
    return target


def onnx_tone_accuracy(model_dir: Path) -> float:
    """Greedy answers of onnxruntime-genai to every held-out phrase, scored on the first word."""
    import onnxruntime_genai as og

    og_model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(og_model)
    correct = 0
    for row in EVAL_ROWS:
        ids = tokenizer.encode(f"Phrase: {row['phrase']}\nTone:")
        params = og.GeneratorParams(og_model)
        params.set_search_options(max_length=len(ids) + 4, do_sample=False)
        generator = og.Generator(og_model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        answer = tokenizer.decode(generator.get_sequence(0)[len(ids) :]).strip().split()
        correct += bool(answer) and answer[0].strip(".,").lower() == row["tone"]
    return correct / len(EVAL_ROWS)


def base_tone_accuracy() -> float:
    """The same held-out phrases answered by the base model (transformers, greedy)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model.smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    correct = 0
    with torch.no_grad():
        for row in EVAL_ROWS:
            ids = tokenizer(f"Phrase: {row['phrase']}\nTone:", return_tensors="pt")
            out = lm.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
            answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).split()
            correct += bool(answer) and answer[0].strip(".,").lower() == row["tone"]
    return correct / len(EVAL_ROWS)


def test_smollm2_learns_the_task_and_its_onnx_export_keeps_it(
    operator_release: str,
    workspace: str,
    custom: client.CustomObjectsApi,
    s3: Any,
    cluster_env: dict[str, str],
) -> None:
    bucket = cluster_env["KUBETUNE_S3_BUCKET"]
    gguf = model.smollm2_gguf()
    s3.upload_file(str(gguf), bucket, f"models/{gguf.name}")
    seed.upload_dataset(s3, bucket)
    body = yaml.safe_load((EXAMPLES / "finetunejob-smollm2-tone.yaml").read_text())
    # A prefix of its own: the same spec under the example's prefix would reuse an earlier run.
    body["spec"]["output"]["uri"] += f"/{uuid.uuid4().hex[:8]}"

    with StatusRecorder(custom, workspace, body["metadata"]["name"]) as recorder:
        apply_ftj(custom, workspace, body)
        ftj = wait_phase(custom, workspace, body["metadata"]["name"], {"Succeeded", "Failed"}, 1800)
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert len(recorder.training_steps()) >= 3, "progress should move through training"
    losses = [s["progress"]["loss"] for s in recorder.statuses if (s.get("progress") or {}).get("loss")]
    assert losses[-1] < losses[0], f"loss did not fall: {losses}"

    onnx_uri = next(a["uri"] for a in status["artifacts"] if a["kind"] == "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        accuracy = onnx_tone_accuracy(download_prefix(s3, onnx_uri, Path(tmp)))
    base = base_tone_accuracy()
    assert accuracy >= 0.9, f"exported int4 ONNX model: held-out accuracy {accuracy:.3f}"
    assert base <= 0.2, f"base model already scores {base:.3f}: the task proves nothing"
    metrics = status["metrics"]
    # The status speaks of the model that shipped, on the rows we scored: the trainer's final
    # evaluation (the kept checkpoint, in PyTorch) and the exporter's check (int4 ONNX) both answered
    # every held-out row, and agree with our own measurement of the exported model.
    assert metrics["taskMetricRows"] == len(EVAL_ROWS) == metrics["parityPrompts"], metrics
    assert abs(metrics["accuracyOnnx"] - accuracy) <= 0.05, (metrics["accuracyOnnx"], accuracy)
    assert abs(metrics["evalExactMatch"] - accuracy) <= 0.05, (metrics["evalExactMatch"], accuracy)
    assert metrics["tokenizerAgreement"] == 1.0, metrics
    assert metrics["evalExactMatch"] >= 0.9 and metrics["evalF1"] >= 0.9, metrics
    assert metrics["evalPerplexity"] == pytest.approx(math.exp(metrics["evalLoss"]), rel=1e-4)
    assert metrics["bestStep"] in (20, 40, 60), metrics
    assert status["lastCheckpoint"]["step"] == 60, status["lastCheckpoint"]
    # TensorBoard event files are under the run's prefix.
    layout = RunLayout.of(body["spec"]["output"]["uri"], workspace, body["metadata"]["name"], status["runId"])
    run_prefix = layout.root.removeprefix(f"s3://{bucket}/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{run_prefix}/tensorboard/").get("Contents", [])
    assert any("tfevents" in o["Key"] for o in listed), listed

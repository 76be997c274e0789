"""Train and export the tiny random Llama end to end on local paths (about a minute on 2 cores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import TrainerInput, parse_trainer_input
from kubetune_api.layout import ADAPTER_DIR, MANIFEST_FILE, MERGED_DIR, ONNX_DIR, RESULT_FILE
from kubetune_trainer.progress import JsonFileSink


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, make_input) -> dict[str, Any]:
    from kubetune_trainer.train import train

    root = tmp_path_factory.mktemp("tiny-run")
    job = make_input(
        str(tiny_model_dir),
        str(root / "out"),
        training={"maxSteps": 30, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 64, "evalSteps": 10},
    )
    sink = JsonFileSink(root / "progress.jsonl")
    metrics = train(job, root / "work", sink)
    return {"job": job, "root": root, "metrics": metrics, "events": sink.read()}


def with_export(job: TrainerInput, **export: Any) -> TrainerInput:
    """The same run with export settings changed (the run id stays: the export reads its adapter)."""
    data = job.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["export"] = {**data["spec"]["export"], **export}
    return parse_trainer_input(data)


def export_elsewhere(tiny_run: dict[str, Any], tmp_path: Path, **export: Any) -> tuple[TrainerInput, Path]:
    """The trained run's adapter and result (which records the adapter's sha256) copied to a fresh output
    root, and the run pointed at it with the export settings changed: an export whose outputs are its own."""
    out = tmp_path / "out"
    shutil.copytree(tiny_run["root"] / "out" / ADAPTER_DIR, out / ADAPTER_DIR)
    shutil.copyfile(tiny_run["root"] / "out" / RESULT_FILE, out / RESULT_FILE)
    job = with_export(tiny_run["job"], **export)
    return job.model_copy(update={"run": job.run.model_copy(update={"output_root": str(out)})}), out


def test_training_lowers_the_loss(tiny_run: dict[str, Any]) -> None:
    metrics = tiny_run["metrics"]
    assert metrics["steps"] == 30
    assert metrics["lastLoss"] < metrics["firstLoss"] - 0.5
    assert metrics["evalLoss"] is not None and metrics["tokensPerSecond"] > 0


def test_adapter_is_saved_with_metrics(tiny_run: dict[str, Any]) -> None:
    adapter = tiny_run["root"] / "out" / "adapter"
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_metrics.json",
        "tokenizer.json",
    } <= {p.name for p in adapter.iterdir()}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert json.loads((adapter / "training_metrics.json").read_text())["runId"] == "run-1"


def test_progress_events_are_monotonic(tiny_run: dict[str, Any]) -> None:
    events = [e for e in tiny_run["events"] if e["kind"] == "progress"]
    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 30
    assert all(e["totalSteps"] == 30 for e in events)
    percents = [e["progressPercentage"] for e in events]
    assert percents == sorted(percents) and percents[-1] == 100
    assert all(isinstance(p, int) for p in percents)
    # The snapshots' keys are the API's Progress fields.
    assert all(e["updateTime"].endswith("Z") for e in events)
    assert any(e.get("evalLoss") is not None for e in events)
    assert all(e["tokensPerSecond"] > 0 for e in events if e["step"] > 0)
    etas = [e["estimatedRemainingSeconds"] for e in events if e["step"] > 0]
    assert etas[-1] == 0.0
    assert tiny_run["events"][-1]["kind"] == "metrics"


def test_export_builds_onnx_with_parity(tiny_run: dict[str, Any]) -> None:
    import onnxruntime_genai as og

    from kubetune_trainer.export import export

    manifest = export(tiny_run["job"], tiny_run["root"] / "work")
    out = tiny_run["root"] / "out"
    og.Model(str(out / "onnx"))  # loads in ONNX Runtime GenAI
    parity = manifest["parity"]
    assert parity["prompts"] == 8 and parity["parity"] == 1.0 and parity["tokenizerAgreement"] == 1.0
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["runId"] == "run-1" and stored["specHash"] == tiny_run["job"].spec.spec_digest()
    assert stored["lora"]["r"] == 8 and stored["dataset"]["sha256"]["train"]
    onnx_files = {f["path"]: f for f in stored["files"]["onnx"]}
    assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= set(onnx_files)
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for group in stored["files"].values() for f in group)
    assert "model.safetensors" in {f["path"] for f in stored["files"]["merged"]}


def test_export_swappable_onnx_adapter(tiny_run: dict[str, Any]) -> None:
    from kubetune_trainer.export import export

    job = with_export(tiny_run["job"], onnx={"precision": "fp32", "adapter": True})
    manifest = export(job, tiny_run["root"] / "work")
    # The adapter switched on in the LoRA-input model generates exactly what the merged model does.
    assert manifest["parity"]["adapterParity"] == 1.0
    assert manifest["parity"]["accuracyOnnxAdapter"] == manifest["parity"]["accuracyOnnx"]
    paths = {f["path"] for f in manifest["files"]["onnx-adapter"]}
    assert {"adapter.onnx_adapter", "model/model.onnx", "model/genai_config.json"} <= paths


def test_export_without_the_merged_model_uploads_no_merged_folder(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """export.mergedModel false: the merged weights only feed the ONNX builder."""
    from kubetune_trainer.export import export
    from kubetune_trainer.manifest import result_document

    job, out = export_elsewhere(tiny_run, tmp_path, mergedModel=False)
    manifest = export(job, tmp_path / "work")
    assert not (out / MERGED_DIR).exists()
    assert set(manifest["files"]) == {ADAPTER_DIR, ONNX_DIR}
    assert manifest["export"]["mergedModel"] is False
    assert manifest["parity"]["parity"] == 1.0  # the ONNX model was still built from the merged weights
    document = json.loads(result_document(job, manifest, tmp_path / "work" / "export" / MANIFEST_FILE))
    assert {a["kind"] for a in document["artifacts"]} == {"adapter", "onnx", "manifest"}


def test_export_without_onnx_builds_none_and_reports_no_parity(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    from kubetune_trainer.export import export
    from kubetune_trainer.manifest import result_document

    job, out = export_elsewhere(tiny_run, tmp_path, onnx={"enabled": False})
    manifest = export(job, tmp_path / "work")
    assert not (out / ONNX_DIR).exists() and not (tmp_path / "work" / "export" / ONNX_DIR).exists()
    timings = manifest["export"]["timings"]
    assert manifest["parity"] is None and "buildSeconds" not in timings and "paritySeconds" not in timings
    assert set(manifest["files"]) == {ADAPTER_DIR, MERGED_DIR}
    assert "model.safetensors" in {f["path"] for f in manifest["files"][MERGED_DIR]}
    assert json.loads((out / MANIFEST_FILE).read_text())["parity"] is None
    document = json.loads(result_document(job, manifest, tmp_path / "work" / "export" / MANIFEST_FILE))
    assert {a["kind"] for a in document["artifacts"]} == {"adapter", "merged", "manifest"}
    assert document["metrics"] == {}  # no parity figures


def test_the_stored_result_names_the_adapter(tiny_run: dict[str, Any]) -> None:
    out = tiny_run["root"] / "out"
    stored = json.loads((out / RESULT_FILE).read_text())
    assert stored["steps"] == 30 and stored["runId"] == "run-1"
    [artifact] = stored["artifacts"]
    assert artifact["kind"] == "adapter" and artifact["uri"] == f"{out}/{ADAPTER_DIR}"


def test_bf16_with_gradient_checkpointing_trains_on_cpu(
    tmp_path: Path, tiny_model_dir: Path, make_input
) -> None:
    from safetensors.numpy import load_file

    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    training = {
        "maxSteps": 3,
        "learningRate": 1e-2,
        "batchSize": 4,
        "maxSeqLength": 32,
        "precision": "bf16",
        "gradientCheckpointing": True,
    }
    job = make_input(str(tiny_model_dir), str(tmp_path / "out"), training=training)
    assert job.spec.training_precision == "bf16" and job.spec.training.gradient_checkpointing
    assert train(job, tmp_path / "work", LoggingSink())["steps"] == 3
    # LoRA B starts at zero: non-zero B proves gradients flowed through the checkpointed layers.
    weights = load_file(str(tmp_path / "out" / "adapter" / "adapter_model.safetensors"))
    assert any(abs(w).max() > 0 for key, w in weights.items() if "lora_B" in key)

"""Train and export the tiny random Llama end to end on local paths (about a minute on 2 cores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import TrainerInput, parse_trainer_input
from kubetune_api.layout import ADAPTER_DIR, MANIFEST_FILE, MERGED_DIR, ONNX_DIR, REJECTED_DIR, RESULT_FILE
from kubetune_api.manifest import SCHEMA_VERSION, Manifest
from kubetune_api.v1alpha1 import GateResult
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


def manifest_at(folder: Path) -> Manifest:
    return Manifest.model_validate_json((folder / MANIFEST_FILE).read_text())


def files_of(manifest: Manifest, kind: str, target: str | None = None) -> dict[str, str]:
    """path -> sha256 of the manifest's artifact of that kind (and target)."""
    [record] = [a for a in manifest.artifacts if a.kind == kind and a.target == target]
    return {f.path: f.sha256 for f in record.files}


def test_export_builds_and_measures_each_target(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    import onnxruntime_genai as og

    from kubetune_trainer.export import export

    job, out = export_elsewhere(tiny_run, tmp_path, targets=[{"precision": "fp32"}, {"precision": "int8"}])
    done = export(job, tmp_path / "work")
    manifest = manifest_at(out)
    assert manifest == done.manifest and manifest.promoted and manifest.schema_version == SCHEMA_VERSION
    assert [t.name for t in manifest.targets] == ["fp32-cpu", "int8-cpu"]
    for target in manifest.targets:
        og.Model(str(out / ONNX_DIR / target.name))  # each loads in ONNX Runtime GenAI
        assert {"model.onnx", "genai_config.json", "tokenizer.json"} <= set(
            files_of(manifest, "onnx", target.name)
        )
        assert target.gate.result == GateResult.NONE and target.metrics["tokenizerAgreement"] == 1.0
        assert {"exactMatch", "parity", "parityTokenAgreement", "decodeTokensPerSecond"} <= set(
            target.metrics
        )
    fp32 = manifest.targets[0].metrics
    # fp32 ONNX computes what PyTorch computes: the same greedy tokens.
    assert fp32["parity"] == fp32["parityTokenAgreement"] == 1.0
    assert manifest.export["evalRows"] == 8 and manifest.base_model.sha256 is not None
    assert {"torch", "transformers", "onnxruntime-genai"} <= set(manifest.libraries)


def test_a_promoted_export_is_never_built_or_written_again(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    from kubetune_trainer.export import export

    job, out = export_elsewhere(tiny_run, tmp_path, evalSamples=2)
    first = export(job, tmp_path / "work")
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = export(job, tmp_path / "work-again")
    assert again.manifest == first.manifest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    assert not (tmp_path / "work-again" / "export" / "targets").exists()


def test_a_missed_gate_promotes_nothing(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    from kubetune_trainer.errors import ExitCode, TrainerError
    from kubetune_trainer.export import export

    # A random tiny model answers nothing right: exact match 0 misses any positive minimum.
    gate = [{"metric": "exactMatch", "min": 0.5}, {"metric": "tokenizerAgreement", "min": 0.99}]
    job, out = export_elsewhere(tiny_run, tmp_path, gate=gate, evalSamples=4)
    with pytest.raises(TrainerError) as failed:
        export(job, tmp_path / "work")
    assert failed.value.exit_code == ExitCode.QUALITY_GATE
    assert "fp32-cpu: exactMatch 0.000 < 0.5" in failed.value.message
    assert f"{out}/{REJECTED_DIR}" in failed.value.message
    # Nothing promoted: only the trainer's adapter and result are at the run's root.
    assert {p.name for p in out.iterdir()} == {ADAPTER_DIR, RESULT_FILE, REJECTED_DIR}
    rejected = manifest_at(out / REJECTED_DIR)
    assert not rejected.promoted and rejected.gate.result == GateResult.FAILED
    assert rejected.gate.failures == ["fp32-cpu: exactMatch 0.000 < 0.5"]  # tokenizerAgreement passed
    assert (out / REJECTED_DIR / ONNX_DIR / "fp32-cpu" / "model.onnx").is_file()
    assert all(a.uri.startswith(f"{out}/{REJECTED_DIR}/") for a in rejected.artifacts if a.kind != "adapter")


def test_export_without_the_merged_model_uploads_no_merged_folder(
    tiny_run: dict[str, Any], tmp_path: Path
) -> None:
    """export.mergedModel false: the merged weights only feed the ONNX builder."""
    from kubetune_trainer.export import export
    from kubetune_trainer.manifest import result_document

    job, out = export_elsewhere(tiny_run, tmp_path, mergedModel=False, evalSamples=2)
    done = export(job, tmp_path / "work")
    assert not (out / MERGED_DIR).exists()
    assert {a.kind for a in done.manifest.artifacts} == {"adapter", "onnx"}
    assert done.manifest.targets[0].metrics["parity"] == 1.0  # still built from the merged weights
    document = json.loads(
        result_document(job, done.manifest, done.manifest_file, done.manifest_uri, done.metrics)
    )
    assert {a["kind"] for a in document["artifacts"]} == {"adapter", "onnx", "manifest"}
    assert [(t["name"], t["gate"]) for t in document["targets"]] == [("fp32-cpu", "None")]
    assert next(a for a in document["artifacts"] if a["kind"] == "onnx")["target"] == "fp32-cpu"
    assert document["metrics"]["evalRows"] == 2


def test_export_without_targets_builds_no_onnx(tiny_run: dict[str, Any], tmp_path: Path) -> None:
    from kubetune_trainer.export import export
    from kubetune_trainer.manifest import result_document

    job, out = export_elsewhere(tiny_run, tmp_path, targets=[])
    done = export(job, tmp_path / "work")
    assert not (out / ONNX_DIR).exists() and done.manifest.targets == []
    assert not any(k.startswith("build") for k in done.manifest.export["timings"])
    assert "model.safetensors" in files_of(done.manifest, "merged")
    document = json.loads(
        result_document(job, done.manifest, done.manifest_file, done.manifest_uri, done.metrics)
    )
    assert {a["kind"] for a in document["artifacts"]} == {"adapter", "merged", "manifest"}
    assert document["metrics"] == {} and "targets" not in document


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

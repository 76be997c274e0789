"""The export's manifest (every file with its sha256 and size, the settings, metrics and parity) and
the result document the operator copies into the status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubetune_api import TrainerInput
from kubetune_api.layout import ARTIFACT_KINDS, MANIFEST_FILE, METRICS_FILE
from kubetune_api.v1alpha1 import QuantizationSpec
from kubetune_trainer import result as run_result
from kubetune_trainer.parity import ParityReport
from kubetune_trainer.storage import FileEntry


def lora_manifest(trained_dir: Path) -> dict[str, Any] | None:
    """The adapter's settings as peft saved them; None for a full fine-tune (no adapter)."""
    config_file = trained_dir / "adapter_config.json"
    if not config_file.is_file():
        return None
    adapter_config = json.loads(config_file.read_text())
    return {
        "r": adapter_config.get("r"),
        "alpha": adapter_config.get("lora_alpha"),
        "dropout": adapter_config.get("lora_dropout"),
        "targetModules": sorted(adapter_config.get("target_modules") or []),
        "modulesToSave": adapter_config.get("modules_to_save"),
        "useDora": bool(adapter_config.get("use_dora")),
    }


def build_manifest(
    job: TrainerInput,
    files: dict[str, list[FileEntry]],
    trained_dir: Path,
    dataset_sha256: dict[str, str],
    report: ParityReport | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    metrics_file = trained_dir / METRICS_FILE
    spec, run = job.spec, job.run
    quantization = spec.effective_quantization
    return {
        "name": run.name,
        "namespace": run.namespace,
        "runId": run.run_id,
        "specHash": spec.spec_digest(),
        "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "baseModel": spec.base_model.to_k8s(),
        "method": spec.method.value,
        "lora": lora_manifest(trained_dir),
        # qlora: the base-weight quantization training ran on (the export merges into fp32).
        "quantization": quantization_manifest(quantization) if quantization is not None else None,
        "dataset": {**spec.dataset.to_k8s(), "sha256": dataset_sha256},
        "export": {**spec.export.to_k8s(), "timings": timings},
        "metrics": json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        "parity": report.to_json() if report is not None else None,
        "files": {group: [e.to_json() for e in entries] for group, entries in files.items()},
    }


def quantization_manifest(spec: QuantizationSpec) -> dict[str, Any]:
    if spec.bits == 8:
        return {"bits": 8}
    return {
        "bits": 4,
        "quantType": spec.four_bit_type,
        "doubleQuant": spec.four_bit_double_quant,
        "computeDtype": spec.four_bit_compute_dtype,
    }


def result_document(job: TrainerInput, manifest: dict[str, Any], manifest_file: Path) -> str:
    """What the operator puts in status: one artifact per folder plus the manifest, and parity."""
    layout = job.run.layout
    artifacts = [
        run_result.folder_artifact(ARTIFACT_KINDS[group], layout.folder(group), entries_of(entries))
        for group, entries in manifest["files"].items()
    ]
    artifacts.append(run_result.file_artifact("manifest", layout.folder(MANIFEST_FILE), manifest_file))
    renamed = {"prompts": "parityPrompts", "firstNTokens": "parityFirstNTokens"}
    parity = {renamed.get(k, k): v for k, v in (manifest["parity"] or {}).items()}
    return run_result.render(parity, artifacts, layout.manifest)


def entries_of(entries: list[dict[str, Any]]) -> list[FileEntry]:
    return [FileEntry(**e) for e in entries]

"""The export's manifest (kubetune_api.manifest.Manifest: every file with its sha256 and size, how it was
made, the figures and the gate's verdict) and the result document the operator copies into the status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from kubetune_api import TrainerInput
from kubetune_api.layout import METRICS_FILE
from kubetune_api.manifest import (
    SCHEMA_VERSION,
    ArtifactRecord,
    BaseModelRecord,
    FileRecord,
    GateRecord,
    Manifest,
    TargetRecord,
)
from kubetune_api.v1alpha1 import ArtifactKind, QuantizationSpec
from kubetune_trainer import result as run_result
from kubetune_trainer.storage import FileEntry

# Whose versions decide what the bundle is and how it was measured.
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "onnx",
    "onnxruntime",
    "onnxruntime-genai",
    "bitsandbytes",
    "safetensors",
    "kubetune",
)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


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


def quantization_manifest(spec: QuantizationSpec) -> dict[str, Any]:
    if spec.bits == 8:
        return {"bits": 8}
    return {
        "bits": 4,
        "quantType": spec.four_bit_type,
        "doubleQuant": spec.four_bit_double_quant,
        "computeDtype": spec.four_bit_compute_dtype,
    }


def artifact_record(
    kind: ArtifactKind, uri: str, entries: list[FileEntry], target: str | None = None
) -> ArtifactRecord:
    files = [FileRecord(path=e.path, uri=e.uri, size=e.size, sha256=e.sha256) for e in entries]
    return ArtifactRecord(kind=kind, uri=uri, target=target, files=files)


def build_manifest(
    job: TrainerInput,
    *,
    promoted: bool,
    base_sha256: str | None,
    trained_dir: Path,
    dataset_sha256: dict[str, str],
    export_figures: dict[str, Any],
    gate: GateRecord,
    targets: list[TargetRecord],
    artifacts: list[ArtifactRecord],
) -> Manifest:
    metrics_file = trained_dir / METRICS_FILE
    spec, run = job.spec, job.run
    quantization = spec.effective_quantization
    return Manifest(
        schema_version=SCHEMA_VERSION,
        name=run.name,
        namespace=run.namespace,
        run_id=run.run_id,
        spec_hash=spec.spec_digest(),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        promoted=promoted,
        base_model=BaseModelRecord(
            uri=spec.base_model.uri, revision=spec.base_model.revision, sha256=base_sha256
        ),
        method=spec.method.value,
        lora=lora_manifest(trained_dir),
        # qlora: the base-weight quantization training ran on (the export merges into fp32).
        quantization=quantization_manifest(quantization) if quantization is not None else None,
        dataset={**spec.dataset.to_k8s(), "sha256": dataset_sha256},
        export={**spec.export.to_k8s(), **export_figures},
        libraries=library_versions(),
        metrics=json.loads(metrics_file.read_text()) if metrics_file.is_file() else {},
        gate=gate,
        targets=targets,
        artifacts=artifacts,
    )


def manifest_json(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)


def result_document(
    job: TrainerInput, manifest: Manifest, manifest_file: Path, manifest_uri: str, metrics: dict[str, Any]
) -> str:
    """What the operator puts in status: one artifact per folder plus the manifest, the run-level
    figures in `metrics`, and each target's figures and verdict in `targets`."""
    artifacts = [
        {
            **run_result.folder_artifact(record.kind.value, record.uri, entries_of(record)),
            **({"target": record.target} if record.target else {}),
        }
        for record in manifest.artifacts
    ]
    artifacts.append(run_result.file_artifact("manifest", manifest_uri, manifest_file))
    targets = [
        {
            "name": t.name,
            "gate": t.gate.result.value,
            "metrics": {k: round(v, 4) for k, v in t.metrics.items()},
        }
        for t in manifest.targets
    ]
    return run_result.render(metrics, artifacts, manifest_uri, targets)


def entries_of(record: ArtifactRecord) -> list[FileEntry]:
    return [FileEntry(path=f.path, size=f.size, sha256=f.sha256, uri=f.uri) for f in record.files]

"""The export's manifest, `<run>/manifest.json` (or `<run>/rejected/manifest.json`): what a bundle holds,
the checksum of every file, and how it was made and measured.

This model is the manifest's only schema. The exporter writes it through this model, the bundle
verifier reads it through this model, and `docs/manifest.schema.json` is generated from it
(`python -m kubetune_api.manifest_schema --write`; `--check` fails on a stale copy).

Versioning: `schemaVersion` names the layout. A change that an older reader would misread (a field
removed, renamed or given a new meaning) gets a new version; adding an optional field does not.
Readers ignore fields they do not know.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from kubetune_api.base import LenientModel
from kubetune_api.status import ArtifactKind, GateResult

SchemaVersion = Literal["kubetune.dev/manifest/v1"]
SCHEMA_VERSION: Final[SchemaVersion] = "kubetune.dev/manifest/v1"


# Read leniently: a newer writer's extra fields are ignored.
ManifestModel = LenientModel


class FileRecord(ManifestModel):
    """One stored object."""

    path: str = Field(description="Path relative to the artifact's folder, with forward slashes.")
    uri: str = Field(description="S3 URI of the object.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the object's bytes, hex.")


class ArtifactRecord(ManifestModel):
    """A folder of the bundle and every file in it."""

    kind: ArtifactKind = Field(
        description="adapter, merged (or a full fine-tune's model), onnx, onnxAdapter or onnxBase."
    )
    uri: str = Field(description="S3 URI of the folder.")
    target: str | None = Field(default=None, description="Export target (onnx, onnxAdapter, onnxBase).")
    files: list[FileRecord] = Field(description="Every file of the folder.")


class BaseModelRecord(ManifestModel):
    """The base model the weights were trained from."""

    uri: str = Field(description="spec.baseModel.uri.")
    revision: str | None = Field(default=None, description="spec.baseModel.revision, if set.")
    sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="Digest of the base weights as the exporter read them: sha256 over the sorted "
        "(path, sha256) of the model folder's files. Unset for method full (the export never reads "
        "the base).",
    )


class SharedBaseRecord(ManifestModel):
    """The content-addressed base ONNX model an .onnx_adapter plugs into."""

    key: str = Field(
        description="Content address: digest of the base weights, precision, provider, "
        "builder version, int4 settings and LoRA target modules."
    )
    uri: str = Field(description="S3 URI of the shared base folder.")
    reused: bool = Field(description="True when another run had already built and stored it.")


class GateRecord(ManifestModel):
    result: GateResult = Field(description="Passed, Failed, or None without export.gate.")
    failures: list[str] = Field(default_factory=list, description="Each unmet minimum, in words.")


class TargetRecord(ManifestModel):
    """One export target: its settings, figures on the held-out rows, gate verdict and shared base."""

    name: str = Field(description="<precision>-<executionProvider>.")
    settings: dict[str, Any] = Field(description="The target as the spec gave it (defaults filled in).")
    metrics: dict[str, float] = Field(description="Figures on the held-out rows (see status.exportTargets).")
    gate: GateRecord
    shared_base: SharedBaseRecord | None = Field(default=None, description="With export.adapter only.")


class Manifest(ManifestModel):
    """Everything an export produced, and the figures it was judged on."""

    # Required: a document without it is not a manifest this reader can vouch for.
    schema_version: SchemaVersion = Field(description="The manifest layout; see the module docstring.")
    name: str = Field(description="FineTuneJob name.")
    namespace: str = Field(description="FineTuneJob namespace.")
    run_id: str = Field(description="The run: a hash of the spec.")
    spec_hash: str = Field(pattern="^[0-9a-f]{64}$", description="sha256 of the canonical spec.")
    created_at: str = Field(description="UTC time the manifest was written, RFC 3339.")
    promoted: bool = Field(
        description="True: the bundle is at the run's prefix. False: the gate failed and it is under "
        "<run>/rejected/; nothing of it was promoted."
    )
    base_model: BaseModelRecord
    method: str = Field(description="lora, qlora or full.")
    lora: dict[str, Any] | None = Field(
        default=None, description="The adapter's settings as peft saved them."
    )
    quantization: dict[str, Any] | None = Field(default=None, description="qlora's base quantization.")
    dataset: dict[str, Any] = Field(description="spec.dataset, with the sha256 of each file read.")
    export: dict[str, Any] = Field(description="spec.export, and the seconds each stage took.")
    libraries: dict[str, str] = Field(description="Versions of the libraries that built and measured it.")
    metrics: dict[str, Any] = Field(description="The training's final metrics.")
    gate: GateRecord = Field(description="The run's verdict: Failed when any target failed.")
    targets: list[TargetRecord] = Field(description="Each export target.")
    artifacts: list[ArtifactRecord] = Field(description="Every folder of the bundle with its files.")

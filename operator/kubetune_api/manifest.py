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

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import Field, ValidationError

from kubetune_api.base import LenientModel
from kubetune_api.status import ArtifactKind, GateResult
from kubetune_api.v1alpha1 import describe_errors

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


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, as the manifest records it (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestError(ValueError):
    """A manifest that cannot be read: not JSON, another schema version, or not this model."""


def parse_manifest(text: str | bytes, uri: str, reader: str) -> Manifest:
    """The manifest at `uri`, or a ManifestError naming it and what is wrong (`reader` says who reads,
    for the message about another schema version)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{uri} is not JSON: {exc}") from exc
    # Checked before the model so that a newer layout is named as such, not as a list of field errors.
    version = data.get("schemaVersion", SCHEMA_VERSION) if isinstance(data, dict) else SCHEMA_VERSION
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{uri} has schemaVersion {version!r}; {reader} reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{uri} is not a {SCHEMA_VERSION} manifest: {describe_errors(exc)}") from exc


# ---- the local layout of a downloaded bundle ------------------------------------------------------
# A bundle downloaded to DIR mirrors the storage below the deepest folder that holds the manifest and
# every artifact: DIR/manifest.json, DIR/adapter/..., DIR/onnx/<target>/... (and rejected/... for a
# rejected bundle, whose adapter stays at the run).


def _uri_parts(uri: str) -> tuple[str, ...]:
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return ("s3:", bucket, *PurePosixPath(key).parts)
    return ("file:", *PurePosixPath(uri).parts)


def _common_depth(manifest: Manifest, manifest_uri: str) -> int:
    common = list(_uri_parts(manifest_uri)[:-1])
    for artifact in manifest.artifacts:
        folder = _uri_parts(artifact.uri)
        while tuple(common) != folder[: len(common)]:
            common.pop()
    return len(common)


def local_folders(manifest: Manifest, manifest_uri: str) -> list[PurePosixPath]:
    """Each artifact's folder, relative to the downloaded bundle's root."""
    depth = _common_depth(manifest, manifest_uri)
    return [PurePosixPath(*_uri_parts(a.uri)[depth:]) for a in manifest.artifacts]


def local_manifest_path(manifest: Manifest, manifest_uri: str) -> PurePosixPath:
    """Where the manifest itself goes, relative to the downloaded bundle's root."""
    return PurePosixPath(*_uri_parts(manifest_uri)[_common_depth(manifest, manifest_uri) :])

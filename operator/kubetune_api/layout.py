"""The S3 layout of a run: every folder and file name under `<spec.output.uri>/<namespace>/<name>/<runId>/`,
and the artifact kind each folder is reported as. The trainer writes it, the operator and users read it."""

from __future__ import annotations

from dataclasses import dataclass

from kubetune_api.v1alpha1 import ArtifactKind

# Trained weights: the adapter of lora and qlora, the whole model of a full fine-tune.
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
# Built by the export Job.
MERGED_DIR = "merged"
ONNX_DIR = "onnx"
ONNX_ADAPTER_DIR = "onnx-adapter"
MANIFEST_FILE = "manifest.json"
# One folder per export target below onnx/ and onnx-adapter/ (e.g. onnx/int4-cpu/); an adapter folder
# holds the .onnx_adapter and the record of the shared base it was exported against.
ONNX_ADAPTER_FILE = "adapter.onnx_adapter"
ADAPTER_RECORD_FILE = "adapter.json"
# An export that failed its gate: the same folders and manifest, under <run>/rejected/, never promoted.
REJECTED_DIR = "rejected"
# Shared base ONNX models, <shared base prefix>/<key>/, with base.json written last (complete marker).
SHARED_BASES_DIR = "onnx-bases"
BASE_RECORD_FILE = "base.json"
# Checkpoints (checkpoint-<step>/), TensorBoard event files.
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# The finished training's metrics and artifacts, written last: its presence marks the run as trained.
RESULT_FILE = "training_result.json"
# Beside the trained weights: the final metrics and the Trainer's log history.
METRICS_FILE = "training_metrics.json"
LOG_HISTORY_FILE = "training_log.json"

ARTIFACT_KINDS: dict[str, ArtifactKind] = {
    ADAPTER_DIR: ArtifactKind.ADAPTER,
    MODEL_DIR: ArtifactKind.MERGED,
    MERGED_DIR: ArtifactKind.MERGED,
    ONNX_DIR: ArtifactKind.ONNX,
    ONNX_ADAPTER_DIR: ArtifactKind.ONNX_ADAPTER,
    MANIFEST_FILE: ArtifactKind.MANIFEST,
}


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with `parts` appended, one slash between each."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


@dataclass(frozen=True)
class RunLayout:
    """Where one run's files are: `root` is `<spec.output.uri>/<namespace>/<name>/<runId>`."""

    root: str

    @classmethod
    def of(cls, output_uri: str, namespace: str, name: str, run_id: str) -> RunLayout:
        """The namespace and name keep two FineTuneJobs with equal specs (so equal run ids) from
        sharing checkpoints and results, even under one output prefix."""
        return cls(join_uri(output_uri, namespace, name, run_id))

    def folder(self, name: str) -> str:
        return join_uri(self.root, name)

    def export_folder(self, group: str, target: str | None = None, rejected: bool = False) -> str:
        """Where an export group goes: promoted under the run, or under rejected/ after a failed gate."""
        parts = ([REJECTED_DIR] if rejected else []) + [group] + ([target] if target else [])
        return join_uri(self.root, *parts)

    def export_manifest(self, rejected: bool = False) -> str:
        return self.export_folder(MANIFEST_FILE, rejected=rejected)

    def trained_dir(self, uses_adapter: bool) -> str:
        """Folder name of the trained weights: the adapter, or the whole model of a full fine-tune."""
        return ADAPTER_DIR if uses_adapter else MODEL_DIR

    @property
    def checkpoints(self) -> str:
        return self.folder(CHECKPOINTS_DIR)

    @property
    def tensorboard(self) -> str:
        return self.folder(TENSORBOARD_DIR)

    @property
    def result(self) -> str:
        return self.folder(RESULT_FILE)

    @property
    def manifest(self) -> str:
        return self.folder(MANIFEST_FILE)


def shared_bases_uri(output_uri: str, shared_base_uri: str | None) -> str:
    """export.sharedBaseUri, or <output.uri>/onnx-bases: shared by every job writing there."""
    return shared_base_uri or join_uri(output_uri, SHARED_BASES_DIR)

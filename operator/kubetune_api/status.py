"""The observed state of a FineTuneJob, and which process writes each field."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import (
    Field,
    field_validator,
)

from kubetune_api.base import (
    LenientModel,
)
from kubetune_api.plan import PlanStatus


class Phase(StrEnum):
    """Coarse state of a FineTuneJob."""

    PENDING = "Pending"
    # Waiting for Kueue to admit the trainer or export workload (quota, priority, preemption).
    QUEUED = "Queued"
    TRAINING = "Training"
    EXPORTING = "Exporting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ConditionType(StrEnum):
    """Condition types the operator sets (kstatus: Ready, Reconciling, Stalled)."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    TRAINED = "Trained"
    EXPORTED = "Exported"
    # Set for queued jobs: Kueue's own reason and message from the Workload's conditions.
    ADMITTED = "Admitted"
    # The unfinished stage's pods: False with the scheduler's, quota's or kubelet's reason.
    PODS_READY = "PodsReady"
    # False while a backoffLimit edit cannot reach the running workload.
    BACKOFF_LIMIT_APPLIED = "BackoffLimitApplied"
    # Dry runs (spec.dryRun): True (PlanReady) when the plan found no error, False with its first error.
    PLANNED = "Planned"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ArtifactKind(StrEnum):
    """What an artifact is."""

    ADAPTER = "adapter"
    MERGED = "merged"
    ONNX = "onnx"
    ONNX_ADAPTER = "onnxAdapter"
    # The shared, content-addressed base ONNX model a swappable adapter plugs into.
    ONNX_BASE = "onnxBase"
    MANIFEST = "manifest"
    METRICS = "metrics"


class Condition(LenientModel):
    """An observation of one aspect of the job (metav1.Condition fields)."""

    type: str = Field(
        max_length=316, description="Condition type: Ready, Reconciling, Stalled, Trained or Exported."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str | None = Field(
        default=None, max_length=1024, description="CamelCase reason for the last transition."
    )
    message: str | None = Field(default=None, max_length=32768, description="Human-readable details.")
    last_transition_time: datetime | None = Field(default=None, description="When status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


LOSS_DECIMALS = 4


class Progress(LenientModel):
    """Training progress, reported by the trainer (Kubeflow trainerStatus names where they fit)."""

    step: int | None = Field(default=None, ge=0, description="Optimizer steps done.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps planned.")
    progress_percentage: int | None = Field(
        default=None, ge=0, le=100, description="step / totalSteps in percent."
    )
    estimated_remaining_seconds: int | None = Field(
        default=None, ge=0, description="Estimated seconds until training ends."
    )
    epoch: float | None = Field(default=None, ge=0, description="Epochs done (fractional).")
    loss: float | None = Field(default=None, description="Training loss, averaged since the last report.")
    eval_loss: float | None = Field(default=None, description="Latest evaluation loss.")
    learning_rate: float | None = Field(default=None, description="Current learning rate.")
    tokens_per_second: float | None = Field(default=None, ge=0, description="Training throughput, all ranks.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="The latest evaluation's metrics (evalLoss, perplexity, task metrics), as they happen.",
    )
    update_time: datetime | None = Field(default=None, description="When the trainer last reported.")

    @field_validator("loss", "eval_loss")
    @classmethod
    def _four_decimals(cls, value: float | None) -> float | None:
        # What `kubectl get ftj` prints as is: 2.5479, not 2.5479415893554687.
        return None if value is None else round(value, LOSS_DECIMALS)


class Checkpoint(LenientModel):
    """A checkpoint in S3 that a restarted trainer resumes from."""

    step: int = Field(ge=0, description="Optimizer step of the checkpoint.")
    uri: str = Field(max_length=1024, description="S3 URI of the checkpoint folder.")
    time: datetime | None = Field(default=None, description="When the checkpoint was written.")


class Artifact(LenientModel):
    """A file or folder the job produced."""

    kind: ArtifactKind = Field(
        description="adapter, merged, onnx, onnxAdapter, onnxBase, manifest or metrics."
    )
    uri: str = Field(max_length=1024, description="S3 URI of the artifact.")
    target: str | None = Field(
        default=None,
        max_length=32,
        description="The export target it belongs to (onnx, onnxAdapter, onnxBase).",
    )
    size_bytes: int | None = Field(default=None, ge=0, description="Size in bytes (all files of a folder).")
    sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="sha256 of the file (of the manifest for a folder).",
    )


class GateResult(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    # No export.gate: the figures are reported, nothing is held to them.
    NONE = "None"


class ExportTargetStatus(LenientModel):
    """One export target's figures on the held-out rows and its gate verdict."""

    name: str = Field(max_length=32, description="The target, <precision>-<executionProvider>.")
    gate: GateResult = Field(description="Passed, Failed, or None without export.gate.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="exactMatch (f1, rougeL when asked for), parity, parityTokenAgreement, "
        "tokenizerAgreement; adapter-prefixed ones for the base+adapter pair; decodeTokensPerSecond.",
    )


class TrainerReport(LenientModel):
    """The part of the status that the trainer writes while it runs. The operator never writes these
    fields, except to clear them when a new run starts."""

    progress: Progress | None = Field(default=None, description="Training progress.")
    last_checkpoint: Checkpoint | None = Field(default=None, description="Most recent checkpoint in S3.")

    def status_patch(self) -> dict[str, Any]:
        """The merge patch of the status subresource that reports what is set."""
        return {"status": self.to_k8s()}


class FineTuneJobStatus(TrainerReport):
    """Observed state of a FineTuneJob: the trainer's report (TrainerReport's fields), and everything
    else, which only the operator writes."""

    TRAINER_FIELDS: ClassVar[frozenset[str]] = frozenset(TrainerReport.model_fields)

    phase: Phase | None = Field(
        default=None, description="Pending, Training, Exporting, Succeeded, Failed or Suspended."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Latest observations, one per type.",
        # One entry per type, so server-side apply merges them by type instead of replacing the list.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    start_time: datetime | None = Field(default=None, description="When training first started.")
    preemptions: int | None = Field(
        default=None,
        ge=0,
        description="Checkpointed stops of this run so far (preemption, eviction, drain, suspension); "
        "the run fails when they pass spec.preemptionLimit.",
    )
    trainer_pods: list[str] | None = Field(
        default=None,
        max_length=128,
        description="The last trainer pods of this run the operator saw (pods of a stopped trainer "
        "vanish; counting their replacements gives status.preemptions).",
    )
    trainer_pods_seen: int | None = Field(
        default=None, ge=0, description="Trainer pods of this run (a single-node Job) seen so far."
    )
    lost_checkpoints: int | None = Field(
        default=None,
        ge=0,
        description="Stops of this run whose SIGTERM checkpoint did not upload; each retry resumed from an "
        "older checkpoint and counted against backoffLimit.",
    )
    completion_time: datetime | None = Field(default=None, description="When the job succeeded or failed.")
    run_id: str | None = Field(
        default=None,
        max_length=64,
        description="Hash of the spec this status describes; artifacts are under it.",
    )
    trainer_job_name: str | None = Field(default=None, max_length=63, description="Name of the training Job.")
    export_job_name: str | None = Field(default=None, max_length=63, description="Name of the export Job.")
    artifacts: list[Artifact] = Field(
        default_factory=list, max_length=64, description="Artifacts of the current run."
    )
    export_targets: list[ExportTargetStatus] = Field(
        default_factory=list, max_length=8, description="Each export target's figures and gate verdict."
    )
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Final metrics of the finished training and export (live ones: progress.metrics).",
    )
    plan: PlanStatus | None = Field(default=None, description="What the dry run found (spec.dryRun).")
    message: str | None = Field(
        default=None, max_length=32768, description="Human-readable summary of the state."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def operator_fields(self) -> dict[str, Any]:
        """The operator's part, as written to the API (unset fields as null, which a merge patch
        removes); the trainer's fields are left out."""
        return self.model_dump(mode="json", by_alias=True, exclude=set(self.TRAINER_FIELDS))

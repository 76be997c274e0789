"""status.plan: what the dry run (spec.dryRun) found, before any GPU is bound.

The plan pod (`python -m kubetune_trainer.plan`) reads the data with the trainer's own readers and
encoders, and the model's config and tokenizer only (the module tree on the meta device, no weights).
It leaves this document as its termination message; the operator copies it into status.plan. Status
models are lenient: an older operator keeps what it knows of a newer plan.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from kubetune_api.base import LenientModel

# The plan travels in the pod's termination message (4 KiB): examples are cut to this many characters.
EXAMPLE_CHARS = 240
MAX_EXAMPLES = 3


class PlanSeverity(StrEnum):
    # Training would fail, or would train on nothing: the dry run fails.
    ERROR = "Error"
    # Training would run, but perhaps not as meant: a Warning Event.
    WARNING = "Warning"


class PlanProblem(LenientModel):
    """One thing the dry run found wrong with the spec, the data or the model."""

    reason: str = Field(
        max_length=64,
        description="CamelCase reason: MissingField, InvalidData, AllRowsTruncated, SomeRowsTruncated, "
        "NoAssistantTurns, NoLabels, RowsWithoutLabels, UnknownTargetModules, InvalidModel.",
    )
    message: str = Field(max_length=1024, description="What was found, and what to change.")
    severity: PlanSeverity = Field(description="Error (training would fail) or Warning.")


class TokenStats(LenientModel):
    """Token lengths of the training rows as the trainer encodes them, before truncation."""

    rows_measured: int = Field(ge=0, description="Rows measured (a seeded sample of large datasets).")
    min: int = Field(ge=0, description="Shortest row, in tokens.")
    mean: float = Field(ge=0, description="Mean length, in tokens.")
    p50: int = Field(ge=0, description="Median length, in tokens.")
    p95: int = Field(ge=0, description="95th percentile, in tokens.")
    max: int = Field(ge=0, description="Longest row, in tokens.")
    truncated_rows: int = Field(ge=0, description="Rows longer than training.maxSeqLength (cut at training).")
    max_seq_length: int = Field(ge=1, description="training.maxSeqLength.")


class LabelCoverage(LenientModel):
    """Which tokens the loss learns from, after truncation at training.maxSeqLength."""

    scope: Literal["all", "completion", "assistant"] = Field(
        description="all (text: every token), completion (promptCompletion) or assistant (chat turns)."
    )
    labeled_share: float = Field(ge=0, le=1, description="Share of the tokens that carry a label.")
    rows_without_labels: int = Field(
        ge=0, description="Rows with no labeled token left within maxSeqLength (they teach nothing)."
    )


class MemoryEstimate(LenientModel):
    """Estimated peak memory of one training device (GPU, or the process on CPU), in MiB."""

    method: Literal["lora", "qlora", "full"] = Field(description="The method estimated.")
    precision: str = Field(max_length=8, description="Training precision: fp32, bf16 or fp16.")
    batch_size: int = Field(ge=1, description="Micro-batch size per device.")
    gradient_checkpointing: bool = Field(description="Whether activations are recomputed.")
    spec: bool = Field(default=False, description="True for the spec's own setting.")
    total_mib: int = Field(ge=0, description="Sum of the terms below.")
    weights_mib: int = Field(ge=0, description="Base and trainable weights as loaded.")
    trainable_state_mib: int = Field(
        ge=0, description="Gradients and AdamW moments of the trainable weights."
    )
    activations_mib: int = Field(ge=0, description="What autograd keeps for the backward pass.")
    logits_mib: int = Field(ge=0, description="LM head logits and their gradient at labeled positions.")
    overhead_mib: int = Field(ge=0, description="CUDA context (GPU) or process overhead (CPU).")


class PlanStatus(LenientModel):
    """What the dry run found. Reported once its plan pod ended; see the Planned condition."""

    format: str | None = Field(default=None, max_length=32, description="The data format used.")
    base_format: str | None = Field(default=None, max_length=16, description="hf (a folder) or gguf.")
    rows: int | None = Field(default=None, ge=0, description="Training rows (after evalRatio, maxSamples).")
    examples: list[str] = Field(
        default_factory=list,
        max_length=MAX_EXAMPLES,
        description=f"The first rows as the trainer renders them (cut at {EXAMPLE_CHARS} characters).",
    )
    tokens: TokenStats | None = Field(default=None, description="Token-length statistics.")
    labels: LabelCoverage | None = Field(default=None, description="Label coverage at training.")
    linear_modules: list[str] = Field(
        default_factory=list, max_length=128, description="Linear layer names of the model LoRA could target."
    )
    target_modules: list[str] = Field(
        default_factory=list, max_length=128, description="The LoRA targets the spec resolves to."
    )
    trainable_parameters: int | None = Field(default=None, ge=0, description="Parameters trained.")
    total_parameters: int | None = Field(default=None, ge=0, description="Parameters of the model.")
    memory: list[MemoryEstimate] = Field(
        default_factory=list,
        max_length=16,
        description="Peak memory per device: the spec's setting first, then other methods and batch sizes.",
    )
    steps_per_epoch: int | None = Field(default=None, ge=0, description="Optimizer steps per epoch.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps of the whole run.")
    problems: list[PlanProblem] = Field(
        default_factory=list, max_length=32, description="Errors fail the dry run; warnings are reported."
    )
    truncated: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Parts left out to fit the pod's 4 KiB termination message.",
    )

    @property
    def errors(self) -> list[PlanProblem]:
        return [p for p in self.problems if p.severity == PlanSeverity.ERROR]

    @property
    def warnings(self) -> list[PlanProblem]:
        return [p for p in self.problems if p.severity == PlanSeverity.WARNING]

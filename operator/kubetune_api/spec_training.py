"""How a FineTuneJob trains: LoRA, QLoRA quantization, hyperparameters and evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from kubetune_api.base import (
    ApiModel,
    ModuleName,
)
from kubetune_api.cel import Cel


class LoraSpec(ApiModel):
    """LoRA adapter settings (method lora or qlora)."""

    r: int = Field(default=16, ge=1, le=1024, description="Rank of the LoRA update matrices.")
    alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling numerator; the scale is alpha/r.")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[ModuleName] = Field(
        default_factory=list,
        max_length=64,
        description="Module names (or name suffixes) to adapt, e.g. [q_proj, v_proj]. Empty: the trainer "
        "discovers the attention and MLP projections of the model.",
    )
    modules_to_save: list[ModuleName] = Field(
        default_factory=list,
        max_length=64,
        description="Modules trained in full and saved with the adapter, e.g. [lm_head].",
    )
    use_dora: bool = Field(default=False, description="Use weight-decomposed LoRA (DoRA).")


class QuantizationSpec(ApiModel):
    """Quantization of the frozen base weights for QLoRA (bitsandbytes)."""

    cel_rules = (
        Cel(
            "!has(self.bits) || self.bits == 4 "
            "|| !(has(self.quantType) || has(self.doubleQuant) || has(self.computeDtype))",
            "quantization.quantType, doubleQuant and computeDtype apply to bits 4 only; "
            "remove them for bits 8",
            lambda q: (
                q.bits == 4 or (q.quant_type is None and q.double_quant is None and q.compute_dtype is None)
            ),
            reason="FieldValueForbidden",
            field_path=".bits",
        ),
    )

    bits: Literal[4, 8] = Field(default=4, description="Bits per base weight.")
    quant_type: Literal["nf4", "fp4"] | None = Field(
        default=None, description="4-bit data type (bits 4 only); unset: nf4."
    )
    double_quant: bool | None = Field(
        default=None, description="Also quantize the quantization constants (bits 4 only); unset: true."
    )
    compute_dtype: Literal["bf16", "fp16", "fp32"] | None = Field(
        default=None, description="Data type of the 4-bit matmuls on dequantized weights; unset: bf16."
    )

    @property
    def four_bit_type(self) -> str:
        return self.quant_type or "nf4"

    @property
    def four_bit_double_quant(self) -> bool:
        return True if self.double_quant is None else self.double_quant

    @property
    def four_bit_compute_dtype(self) -> str:
        return self.compute_dtype or "bf16"


DEFAULT_EPOCHS = 1.0


class TrainingSpec(ApiModel):
    """Training hyperparameters. maxSteps or epochs sets the length; with neither, one epoch."""

    cel_rules = (
        Cel(
            "!(has(self.maxSteps) && has(self.epochs))",
            "training.maxSteps and training.epochs are mutually exclusive",
            lambda t: t.max_steps is None or t.epochs is None,
            reason="FieldValueForbidden",
            field_path=".epochs",
        ),
        Cel(
            "!(has(self.warmupSteps) && has(self.warmupRatio))",
            "training.warmupSteps and training.warmupRatio are mutually exclusive",
            lambda t: t.warmup_steps is None or t.warmup_ratio is None,
            reason="FieldValueForbidden",
            field_path=".warmupRatio",
        ),
    )

    max_steps: int | None = Field(
        default=None, ge=1, description="Number of optimizer steps. Excludes epochs."
    )
    epochs: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Passes over the training data (may be fractional). Excludes maxSteps. With "
        f"neither set: {DEFAULT_EPOCHS:g} epoch.",
    )
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak learning rate.")
    lr_scheduler: Literal[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
    ] = Field(default="linear", description="Learning-rate schedule (Hugging Face scheduler names).")
    warmup_steps: int | None = Field(
        default=None, ge=0, description="Linear warmup steps (none when unset). Excludes warmupRatio."
    )
    warmup_ratio: float | None = Field(
        default=None,
        ge=0,
        le=0.5,
        description="Warmup as a fraction of the total steps. Excludes warmupSteps.",
    )
    batch_size: int = Field(
        default=8, ge=1, le=4096, description="Micro-batch size per device (per GPU, or per process on CPU)."
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Micro-batches accumulated into one optimizer step."
    )
    gradient_checkpointing: bool = Field(
        default=True,
        description="Recompute activations in the backward pass: less memory, ~30% more compute.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="Training precision. auto: bf16 on GPUs that support it, fp32 otherwise.",
    )
    max_seq_length: int = Field(
        default=1024, ge=16, le=131072, description="Longest tokenized example; longer ones are truncated."
    )
    packing: bool = Field(
        default=False, description="Pack several short examples into each sequence to avoid padding."
    )
    seed: int = Field(default=42, ge=0, description="Seed of weight init (LoRA), dropout and data order.")
    logging_steps: int = Field(
        default=10, ge=1, description="Report loss and progress to status.progress every this many steps."
    )
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        description="Evaluate (eval loss, perplexity, task metrics) every this many steps; "
        "unset: once, at the end.",
    )
    save_steps: int = Field(
        default=100,
        ge=1,
        description="Checkpoint to S3 every this many steps, and on SIGTERM; a replaced trainer pod "
        "resumes from the newest. With evaluation.earlyStopping, at every evaluation instead.",
    )

    @property
    def length_epochs(self) -> float | None:
        """Epochs to train when maxSteps does not set the length."""
        return None if self.max_steps is not None else (self.epochs or DEFAULT_EPOCHS)


TaskMetric = Literal["exactMatch", "f1", "rougeL"]
# What early stopping can watch: the eval loss, its perplexity, or a task metric.
WatchedMetric = Literal["evalLoss", "perplexity", "exactMatch", "f1", "rougeL"]
TASK_METRICS: tuple[TaskMetric, ...] = ("exactMatch", "f1", "rougeL")


class EarlyStoppingSpec(ApiModel):
    """Stop when the watched metric has not improved for `patience` evaluations; keep the best."""

    metric: WatchedMetric = Field(
        default="evalLoss",
        description="Metric to watch; evalLoss and perplexity improve downwards, the task metrics upwards. "
        "A task metric must also be listed in evaluation.metrics.",
    )
    patience: int = Field(
        default=3, ge=1, le=1000, description="Evaluations without improvement before training stops."
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="Smallest change of the metric that counts as an improvement."
    )

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in ("evalLoss", "perplexity")


class EvaluationSpec(ApiModel):
    """Task metrics from greedy answers to held-out rows at each evaluation, and early stopping."""

    cel_rules = (
        Cel(
            "!has(self.earlyStopping) || !(self.earlyStopping.metric in ['exactMatch', 'f1', 'rougeL'])"
            " || (has(self.metrics) && self.earlyStopping.metric in self.metrics)",
            "evaluation.earlyStopping.metric must also be listed in evaluation.metrics",
            lambda e: (
                e.early_stopping is None
                or e.early_stopping.metric not in TASK_METRICS
                or e.early_stopping.metric in e.metrics
            ),
            field_path=".earlyStopping.metric",
        ),
    )

    metrics: list[TaskMetric] = Field(
        default_factory=list,
        max_length=3,
        description="Task metrics reported at each evaluation besides evalLoss and perplexity: "
        "exactMatch and f1 (macro over the gold labels) for label-style answers, rougeL for free text.",
    )
    samples: int = Field(
        default=64,
        ge=1,
        le=10000,
        description="Held-out rows answered for the task metrics at each evaluation: a sample drawn with "
        "dataset.seed, or every row when there are fewer. status.metrics.taskMetricRows says how many.",
    )
    max_new_tokens: int = Field(
        default=32, ge=1, le=1024, description="Longest generated answer for the task metrics."
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="Stop early and keep the best checkpoint; needs training.evalSteps."
    )
    score_base_model: bool = Field(
        default=False,
        description="Also answer the same rows with the base model before training: status.metrics gets "
        "evalAccuracyBefore beside evalAccuracyAfter (exact match of the trained model).",
    )

"""The trainer's typed configuration: the one JSON document the operator writes for both Jobs.

Field names are camelCase in JSON (the FineTuneJob spec's style) and snake_case in Python.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kubetune_trainer.errors import config_error

# Olive's int4 settings that keep a fine-tuned model's accuracy (see the export docs): k_quant for the
# body, and int8 for the LM head and the most quantization-sensitive layers.
DEFAULT_INT4_ALGO: Final = "k_quant"
DEFAULT_INT4_MIXED_PRECISION = "last_matmul:int8,mixed_layers:int8"


class _Spec(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid", protected_namespaces=()
    )


def _unset(value: object) -> bool:
    """For fields added after the first release: left out of dumps at their default, so an older
    config keeps its exact JSON (the operator's ConfigMap) and its spec hash."""
    return value is None or value is False


def template_fields(template: str) -> list[str]:
    """The `{field}` placeholders of a template, in order of appearance."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad text template {template!r}: {exc}") from exc


class BaseModelSpec(_Spec):
    # s3://bucket/prefix/ of an HF folder, s3://bucket/key.gguf, or a local folder or .gguf file.
    uri: str = Field(min_length=1)
    revision: str | None = None


DataFormat = Literal["auto", "text", "chat", "promptCompletion"]


class DatasetSpec(_Spec):
    train_uri: str = Field(min_length=1)
    eval_uri: str | None = None
    # Used only without evalUri: the fraction of the training rows held out for evaluation.
    eval_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    # auto: text when textTemplate is set, else detected from the first row (a `messages` list: chat;
    # `prompt` and `completion`: promptCompletion). Left out of dumps at auto, so older configs keep
    # their JSON and spec hash.
    format: DataFormat = Field(default="auto", exclude_if=lambda value: value == "auto")
    # Format text: Olive-style "Phrase: {phrase}\nTone: {tone}" renders each row into one training text.
    text_template: str | None = Field(default=None, min_length=1, exclude_if=_unset)
    # The placeholder whose value is the answer: prompts for generation checks are the template up to
    # it. Defaults to the last placeholder.
    response_field: str | None = None
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 42

    @field_validator("text_template")
    @classmethod
    def _has_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        fields = template_fields(value)
        if not fields or any(not f.isidentifier() for f in fields):
            raise ValueError("textTemplate needs {field} placeholders naming row fields, e.g. '{text}'")
        return value

    @model_validator(mode="after")
    def _template_for_text(self) -> DatasetSpec:
        if self.format == "text" and self.text_template is None:
            raise ValueError("format text needs textTemplate")
        if self.format in ("chat", "promptCompletion") and self.text_template is not None:
            raise ValueError(f"textTemplate only applies to format text, not {self.format}")
        if self.response_field is not None:
            if self.text_template is None:
                raise ValueError("responseField needs textTemplate (format text)")
            if self.response_field not in template_fields(self.text_template):
                raise ValueError(
                    f"responseField {self.response_field!r} is not a placeholder of textTemplate"
                )
        return self

    @property
    def answer_field(self) -> str | None:
        """Format text's answer placeholder; None without a textTemplate."""
        if self.text_template is None:
            return None
        return self.response_field or template_fields(self.text_template)[-1]


class LoraSpec(_Spec):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    # None: discovered from the model (its attention projections, e.g. q/k/v/o_proj).
    target_modules: list[str] | None = None
    modules_to_save: list[str] | None = None
    # Weight-decomposed LoRA: also trains a per-output-channel magnitude (slower per step).
    use_dora: bool = Field(default=False, exclude_if=_unset)

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("targetModules must name at least one module, or be omitted to discover them")
        return value


Method = Literal["lora", "qlora", "full"]
DType = Literal["bf16", "fp16", "fp32"]


class QuantizationSpec(_Spec):
    """bitsandbytes quantization of the frozen base weights (method qlora only).

    The other fields apply to bits 4 only; None means the 4-bit default: nf4, double quantization,
    bf16 compute. 8-bit matmuls run in the dtype of their input (fp32 after kbit preparation)."""

    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] | None = None
    double_quant: bool | None = None
    # The dtype 4-bit matmuls run in on the de-quantized weights.
    compute_dtype: DType | None = None

    @model_validator(mode="after")
    def _four_bit_options(self) -> QuantizationSpec:
        if self.bits == 8:
            for name in ("quant_type", "double_quant", "compute_dtype"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"quantization.{to_camel(name)} applies to bits 4 only; remove it for bits 8"
                    )
        return self

    @property
    def four_bit_type(self) -> str:
        return self.quant_type or "nf4"

    @property
    def four_bit_double_quant(self) -> bool:
        return True if self.double_quant is None else self.double_quant

    @property
    def four_bit_compute_dtype(self) -> DType:
        return self.compute_dtype or "bf16"


LrScheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]


class TrainingSpec(_Spec):
    # maxSteps wins over epochs; with neither, one epoch.
    max_steps: int | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler: LrScheduler = "linear"
    warmup_steps: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(default=8, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    gradient_checkpointing: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_seq_length: int = Field(default=512, gt=8)
    # Padding-free batching: each batch's examples are concatenated into rows of up to maxSeqLength,
    # positions restarting per example so no example attends to another (data.PackingCollator).
    packing: bool = Field(default=False, exclude_if=_unset)
    seed: int = 42
    logging_steps: int = Field(default=1, gt=0)
    # None: evaluate once at the end.
    eval_steps: int | None = Field(default=None, gt=0)
    # Held-out rows answered by greedy generation before and after training (0: skip); gives the
    # evalAccuracyBefore/After metrics.
    generation_eval_samples: int = Field(default=0, ge=0)
    # Checkpoint (weights, optimizer, scheduler, RNG, data position) every this many steps to
    # <output.uri>/checkpoints/; None: only on SIGTERM. A restarted trainer resumes from the newest.
    # With evaluation.earlyStopping checkpoints follow the evaluations (evalSteps) instead.
    save_steps: int | None = Field(default=None, gt=0, exclude_if=_unset)

    @model_validator(mode="after")
    def _one_warmup(self) -> TrainingSpec:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("set warmupSteps or warmupRatio, not both")
        return self


TaskMetric = Literal["exactMatch", "f1", "rougeL"]
# What early stopping can watch: the eval loss, its perplexity, or a task metric.
WatchedMetric = Literal["evalLoss", "perplexity", "exactMatch", "f1", "rougeL"]


class EarlyStoppingSpec(_Spec):
    metric: WatchedMetric = "evalLoss"
    # Evaluations without an improvement larger than minDelta before training stops.
    patience: int = Field(default=3, gt=0)
    min_delta: float = Field(default=0.0, ge=0.0)

    @property
    def greater_is_better(self) -> bool:
        return self.metric not in ("evalLoss", "perplexity")


class EvaluationSpec(_Spec):
    """Task metrics from greedy answers to held-out rows at each evaluation, and early stopping."""

    # exactMatch and f1 (macro over the gold labels) for label-style answers; rougeL for free text.
    metrics: list[TaskMetric] = Field(default_factory=list)
    samples: int = Field(default=64, gt=0)
    max_new_tokens: int = Field(default=32, gt=0)
    early_stopping: EarlyStoppingSpec | None = None

    @model_validator(mode="after")
    def _watched_metric_is_computed(self) -> EvaluationSpec:
        watched = self.early_stopping.metric if self.early_stopping else None
        if watched in ("exactMatch", "f1", "rougeL") and watched not in self.metrics:
            raise ValueError(f"earlyStopping.metric {watched} must also be listed in evaluation.metrics")
        return self


class OutputSpec(_Spec):
    # s3://bucket/prefix (or a local folder): the trainer writes <uri>/adapter/ (lora, qlora) or
    # <uri>/model/ (full), the export job <uri>/merged/ (lora, qlora), <uri>/onnx/ and <uri>/manifest.json.
    uri: str = Field(min_length=1)


class Int4Spec(_Spec):
    algo: Literal["k_quant", "rtn", "default"] = DEFAULT_INT4_ALGO
    # The builder's matmul_mixed_precision; "" quantizes every MatMul to int4.
    mixed_precision: str = DEFAULT_INT4_MIXED_PRECISION
    block_size: Literal[16, 32, 64, 128, 256] = 32
    accuracy_level: Literal[1, 2, 3, 4] | None = None


class ExportSpec(_Spec):
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    execution_provider: Literal["cpu", "cuda"] = "cpu"
    int4: Int4Spec = Int4Spec()
    # Build a swappable .onnx_adapter beside a LoRA-input model (multi-LoRA serving).
    onnx_adapter: bool = False
    # Held-out prompts generated by both PyTorch and ONNX Runtime GenAI to measure parity.
    parity_prompts: int = Field(default=16, ge=0)
    # Two generations agree when their first N new tokens are identical.
    parity_tokens: int = Field(default=8, gt=0)
    max_new_tokens: int = Field(default=16, gt=0)
    # Fail the export (exit 6) when parity falls below this; None only reports it.
    min_parity: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _supported_combination(self) -> ExportSpec:
        # The builder's valid CPU/CUDA combinations: fp16 has no CPU kernels.
        if self.precision == "fp16" and self.execution_provider == "cpu":
            raise ValueError(
                "export precision fp16 needs executionProvider cuda; use fp32, int8 or int4 on cpu"
            )
        return self


class TrainerConfig(_Spec):
    name: str = Field(min_length=1)
    namespace: str = "default"
    run_id: str = Field(min_length=1)
    base_model: BaseModelSpec
    dataset: DatasetSpec
    # lora: an adapter on the full-precision base; qlora: an adapter on a 4/8-bit base; full: all weights.
    method: Method = "lora"
    lora: LoraSpec = LoraSpec()
    # qlora only; None there means 4-bit nf4 with double quantization.
    quantization: QuantizationSpec | None = Field(default=None, exclude_if=_unset)
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec | None = Field(default=None, exclude_if=_unset)
    output: OutputSpec
    export: ExportSpec = ExportSpec()

    @model_validator(mode="after")
    def _method_sections(self) -> TrainerConfig:
        if self.quantization is not None and self.method != "qlora":
            raise ValueError(f"quantization is only valid with method qlora, not {self.method}")
        if self.method == "full":
            if "lora" in self.model_fields_set:
                raise ValueError("lora must not be set with method full (it trains every weight)")
            if self.export.onnx_adapter:
                raise ValueError("export.onnxAdapter needs a LoRA: method lora or qlora, not full")
        elif self.lora.use_dora and self.export.onnx_adapter:
            raise ValueError(
                "export.onnxAdapter cannot carry DoRA magnitudes; set lora.useDora false or drop onnxAdapter"
            )
        stopping = self.evaluation.early_stopping if self.evaluation else None
        if stopping is not None:
            if self.training.eval_steps is None:
                raise ValueError("evaluation.earlyStopping needs training.evalSteps")
            if self.dataset.eval_uri is None and self.dataset.eval_ratio == 0:
                raise ValueError("evaluation.earlyStopping needs eval data: dataset.evalUri or evalRatio > 0")
        return self

    @model_serializer(mode="wrap")
    def _without_unused_lora(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A full fine-tune has no adapter: its dumps (the operator's ConfigMap) carry no lora section,
        # so they parse again.
        data: dict[str, Any] = handler(self)
        if self.method == "full":
            data.pop("lora", None)
        return data

    @property
    def uses_adapter(self) -> bool:
        return self.method != "full"

    @property
    def effective_quantization(self) -> QuantizationSpec | None:
        """qlora's quantization with its default filled in; None for the other methods."""
        if self.method != "qlora":
            return None
        return self.quantization or QuantizationSpec()

    def spec_hash(self) -> str:
        """A stable hash of the whole configuration, recorded in the manifest."""
        canonical = json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_config(data: dict | str | bytes) -> TrainerConfig:
    """Validate a config, raising TrainerError(INVALID_CONFIG) with every problem listed."""
    try:
        if isinstance(data, dict):
            return TrainerConfig.model_validate(data)
        return TrainerConfig.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise config_error(f"invalid trainer config: {problems}") from exc


def load_config(path: Path) -> TrainerConfig:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise config_error(f"cannot read config {path}: {exc}") from exc
    return parse_config(raw)

"""FineTuneJob, kubetune.dev/v1alpha1: the one source of the API schema.

The CRD in crds/ is generated from these models (`python -m kubetune_api.crd --write`), so
descriptions, defaults, enums, bounds and CEL rules written here are what the API server enforces and
what `kubectl explain ftj.spec...` prints.

Conventions:
- Spec models are frozen and forbid unknown fields: a typo is a user error, and inline credentials
  (`accessKey: ...`) cannot be expressed at all.
- Status models ignore unknown fields, so an older operator can still read what a newer trainer wrote.
- Optional fields default to None and are left out of the CRD's `required`; the API server prunes an
  explicit `null`, so "unset" looks the same to CEL `has()` and to Python.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue

from kubetune_api.cel import Cel, add_model_rules, check_model_rules

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ("ftj",)
CATEGORIES = ("kubetune",)

# Child Job names append a suffix and the 12-character run id to the FineTuneJob's name, and Job names
# end up in 63-character label values, so the name must leave room for both.
NAME_MAX_LENGTH = 40
RUN_ID_LENGTH = 12


class _Model(BaseModel):
    """Base of every API model: frozen, camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=add_model_rules,
    )
    cel_rules: ClassVar[tuple[Cel, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        check_model_rules(self)
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _LenientModel(_Model):
    # For status and metadata: the operator and the trainer both write status, and the API server adds
    # metadata fields; tolerate what this version does not know.
    model_config = ConfigDict(extra="ignore")


def _nested(model: type[_Model], description: str) -> Any:
    # `default: {}` in the CRD makes the API server fill in the nested defaults, so `kubectl get -o yaml`
    # shows the effective settings; pydantic does the same through the factory. The server also checks
    # the model's CEL rules against the bare `{}`, so those rules must guard fields with has().
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


# --- shared field types -------------------------------------------------------------------------------

_S3_BUCKET = "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_PVC_CLAIM = "[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_DNS_SUBDOMAIN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

SourceUri = Annotated[
    str,
    Field(min_length=2, max_length=1024),
    Cel.regex(
        f"^(s3://{_S3_BUCKET}/.+|pvc://{_PVC_CLAIM}/.+|/.+)$",
        "must be s3://bucket/key, pvc://claim/path or an absolute path inside the trainer container",
    ),
]
OutputUri = Annotated[
    str,
    Field(min_length=8, max_length=1024),
    Cel.regex(f"^s3://{_S3_BUCKET}(/.*)?$", "output.uri must be an S3 URI: s3://bucket/prefix"),
]
EndpointUrl = Annotated[
    str,
    Field(max_length=1024),
    Cel.regex("^https?://[^/ ]+(/.*)?$", "endpoint must be an http:// or https:// URL"),
]
SecretName = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel.regex(_DNS_SUBDOMAIN, "must be the name of a Secret in the FineTuneJob's namespace"),
]
SecretKey = Annotated[
    str,
    Field(min_length=1, max_length=253),
    Cel.regex("^[-._a-zA-Z0-9]+$", "must be a Secret data key (letters, digits, '-', '_', '.')"),
]
ModuleName = Annotated[str, Field(min_length=1, max_length=256)]

# The Kubernetes quantity grammar, as controller-gen emits it for resource.Quantity.
_QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"  # noqa: E501
_QUANTITY_RE = re.compile(_QUANTITY_PATTERN)


def _quantity(value: Any) -> Any:
    # YAML turns `cpu: 4` into an int; Kubernetes accepts both, so normalise to the string form.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
    return value


class _IntOrStringQuantity:
    """Schema of a resource.Quantity: an int or a string, with the quantity pattern."""

    @staticmethod
    def __get_pydantic_json_schema__(schema: Any, handler: Any) -> JsonSchemaValue:
        return {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }


Quantity = Annotated[str, BeforeValidator(_quantity), _IntOrStringQuantity()]


def _is_s3(uri: str | None) -> bool:
    return uri is not None and uri.startswith("s3://")


# --- spec ---------------------------------------------------------------------------------------------


class Method(StrEnum):
    """Fine-tuning method."""

    LORA = "lora"
    QLORA = "qlora"
    FULL = "full"


class CredentialsSecretRef(_Model):
    """A Secret in the FineTuneJob's namespace that holds S3 credentials. Credentials are never inline."""

    name: SecretName = Field(description="Name of the Secret, in the same namespace as the FineTuneJob.")
    access_key_id_key: SecretKey = Field(
        default="AWS_ACCESS_KEY_ID", description="Key in the Secret that holds the access key id."
    )
    secret_access_key_key: SecretKey = Field(
        default="AWS_SECRET_ACCESS_KEY", description="Key in the Secret that holds the secret access key."
    )


class ModelSource(_Model):
    """The base model to fine-tune."""

    cel_rules = (
        Cel(
            "!has(self.credentialsSecretRef) || self.uri.startsWith('s3://')",
            "baseModel.credentialsSecretRef only applies to an s3:// uri",
            lambda m: m.credentials_secret_ref is None or _is_s3(m.uri),
            reason="FieldValueForbidden",
            field_path=".credentialsSecretRef",
        ),
    )

    uri: Annotated[SourceUri, Cel.immutable("baseModel.uri is immutable; create a new FineTuneJob")] = Field(
        description=(
            "Where the model is: an S3 prefix holding a Hugging Face model folder "
            "(s3://bucket/models/name/), an S3 .gguf object, pvc://claim/path, or an absolute path in the "
            "trainer image. The trainer detects GGUF files. Immutable."
        )
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        description="Revision of the model (e.g. the Hugging Face commit the folder came from); "
        "recorded in the artifact manifest.",
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description="S3 credentials for the model; defaults to output.credentialsSecretRef."
    )


TEXT_FIELD_TEMPLATE = "{text}"


def template_fields(template: str) -> list[str]:
    """The `{field}` placeholders of a template, in order of appearance."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


class DatasetSpec(_Model):
    """Training (and evaluation) data: JSONL, JSON, CSV or Parquet files, one example per row."""

    cel_rules = (
        Cel(
            "!(has(self.evalRatio) && has(self.evalUri))",
            "evalRatio and evalUri are mutually exclusive: split the train set or give an eval file",
            lambda d: d.eval_ratio is None or d.eval_uri is None,
            reason="FieldValueForbidden",
            field_path=".evalRatio",
        ),
        Cel(
            "!has(self.textTemplate) || self.format in ['auto', 'text']",
            "textTemplate only applies to format text (or auto)",
            lambda d: d.text_template is None or d.format in ("auto", "text"),
            reason="FieldValueForbidden",
            field_path=".textTemplate",
        ),
        Cel(
            "!has(self.credentialsSecretRef) || self.trainUri.startsWith('s3://') "
            "|| (has(self.evalUri) && self.evalUri.startsWith('s3://'))",
            "dataset.credentialsSecretRef only applies to s3:// uris",
            lambda d: d.credentials_secret_ref is None or _is_s3(d.train_uri) or _is_s3(d.eval_uri),
            reason="FieldValueForbidden",
            field_path=".credentialsSecretRef",
        ),
        Cel(
            "!has(self.responseField) || (has(self.textTemplate) "
            "&& self.textTemplate.contains('{' + self.responseField + '}'))",
            "dataset.responseField must name a {placeholder} of dataset.textTemplate",
            lambda d: (
                d.response_field is None
                or (d.text_template is not None and f"{{{d.response_field}}}" in d.text_template)
            ),
            field_path=".responseField",
        ),
    )

    train_uri: SourceUri = Field(
        description="Training data: a JSONL, JSON, CSV or Parquet file (told apart by its extension) at "
        "s3://bucket/key, pvc://claim/path or an absolute path."
    )
    eval_uri: SourceUri | None = Field(
        default=None, description="Evaluation data, in the same form as trainUri. Excludes evalRatio."
    )
    eval_ratio: float | None = Field(
        default=None,
        gt=0,
        le=0.5,
        description="Fraction of the training rows held out for evaluation (split with dataset.seed). "
        "Excludes evalUri. Unset, and no evalUri: every row trains and nothing is evaluated.",
    )
    format: Literal["auto", "text", "chat", "promptCompletion"] = Field(
        default="auto",
        description="Record format. text: one string per record (textTemplate or a 'text' field); chat: a "
        "'messages' list rendered with the tokenizer's chat template; promptCompletion: 'prompt' and "
        "'completion' fields, loss on the completion only; auto: detected from the first records.",
    )
    text_template: (
        Annotated[
            str,
            Field(max_length=8192),
            Cel.regex("[{][A-Za-z_][A-Za-z0-9_]*[}]", "textTemplate must reference at least one {field}"),
        ]
        | None
    ) = Field(
        default=None,
        description="Template that turns a record into training text; {field} placeholders are replaced by "
        "the record's fields, e.g. '### Instruction: {prompt} ### Answer: {response}'.",
    )
    response_field: Annotated[str, Field(max_length=256)] | None = Field(
        default=None,
        description="The textTemplate placeholder that holds the answer: generation-based evaluation "
        "and export checks prompt with the template up to it. Unset: the last placeholder.",
    )
    max_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many training records (after shuffling)."
    )
    seed: int = Field(
        default=42,
        ge=0,
        description="Seed of the shuffle, of the evalRatio split and of the sampled evaluation rows.",
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None, description="S3 credentials for the data; defaults to output.credentialsSecretRef."
    )

    @field_validator("text_template")
    @classmethod
    def _placeholders_name_fields(cls, value: str | None) -> str | None:
        # Beyond what CEL can parse: every placeholder must be a plain field name.
        if value is None:
            return value
        try:
            fields = template_fields(value)
        except ValueError as exc:
            raise ValueError(f"textTemplate is not a valid template: {exc}") from exc
        if not fields or any(not f.isidentifier() for f in fields):
            raise ValueError("textTemplate placeholders must name row fields, e.g. '{text}'")
        return value

    @property
    def has_eval_data(self) -> bool:
        return self.eval_uri is not None or self.eval_ratio is not None

    @property
    def template(self) -> str | None:
        """The template rows are rendered with: textTemplate, or each row's 'text' for format text."""
        if self.text_template is not None:
            return self.text_template
        return TEXT_FIELD_TEMPLATE if self.format == "text" else None

    @property
    def answer_field(self) -> str | None:
        """The answer placeholder of the template; None without one."""
        template = self.template
        if template is None:
            return None
        return self.response_field or template_fields(template)[-1]


class LoraSpec(_Model):
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


class QuantizationSpec(_Model):
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


class TrainingSpec(_Model):
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


class EarlyStoppingSpec(_Model):
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


class EvaluationSpec(_Model):
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


class Toleration(_Model):
    """A pod toleration (same fields as core/v1 Toleration)."""

    cel_rules = (
        Cel(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
            "a toleration with operator Exists must not have a value",
            lambda t: t.operator != "Exists" or t.value is None,
            reason="FieldValueForbidden",
            field_path=".value",
        ),
    )

    key: str | None = Field(
        default=None, max_length=316, description="Taint key; empty with Exists matches all."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(default=None, max_length=63, description="Taint value to match with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction."
    )


class ResourcesSpec(_Model):
    """Compute for the trainer pods."""

    gpus_per_node: int = Field(default=1, ge=0, le=16, description="GPUs per trainer pod; 0 trains on CPU.")
    nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Trainer pods, one per node; training is data-parallel across all of them.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per pod, e.g. 8 or 7500m.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per pod, e.g. 64Gi.")
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, description="Node labels the trainer pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the trainer pods."
    )
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass of the trainer pods."
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Trainer image override; defaults to the operator's trainer image.",
    )


class Int4Spec(_Model):
    """int4 weight-only quantization of the ONNX model (onnxruntime-genai model builder)."""

    algorithm: Literal["default", "rtn", "k_quant"] = Field(
        default="k_quant", description="Quantization algorithm (builder algo_config)."
    )
    last_matmul: Literal["int4", "int8"] = Field(
        default="int8",
        description="Type of the last MatMul (lm_head); int8 protects fine-tuned accuracy "
        "(builder matmul_mixed_precision last_matmul).",
    )
    mixed_layers: Literal["int4", "int8"] = Field(
        default="int8",
        description="Type of the most quantization-sensitive layers "
        "(builder matmul_mixed_precision mixed_layers).",
    )
    block_size: Literal[16, 32, 64, 128, 256] = Field(default=32, description="Quantization block size.")
    accuracy_level: Literal[1, 2, 3, 4] | None = Field(
        default=None,
        description="Minimum compute precision of int4 MatMuls (1 fp32, 2 fp16, 3 bf16, 4 int8); unset: "
        "the builder's default for the execution provider.",
    )


class OnnxExportSpec(_Model):
    """ONNX model for onnxruntime-genai."""

    cel_rules = (
        Cel(
            # Written with has(): the API server also checks this rule against the bare `default: {}`.
            "!has(self.precision) || self.precision != 'fp16' "
            "|| (has(self.executionProvider) && self.executionProvider == 'cuda')",
            "onnx precision fp16 needs executionProvider cuda (no fp16 CPU kernels); use fp32, int8 or int4",
            lambda o: o.precision != "fp16" or o.execution_provider == "cuda",
            field_path=".precision",
        ),
    )

    enabled: bool = Field(default=True, description="Build the ONNX model.")
    precision: Literal["int4", "int8", "fp16", "fp32"] = Field(
        default="int4", description="Weight precision."
    )
    execution_provider: Literal["cpu", "cuda"] = Field(
        default="cpu", description="onnxruntime execution provider the model is built for."
    )
    int4: Int4Spec = _nested(Int4Spec, "int4 quantization settings (precision int4 only).")
    adapter: bool = Field(
        default=False,
        description="Also write the LoRA weights as a swappable .onnx_adapter for a base model that takes "
        "them as inputs (multi-LoRA serving). lora and qlora only.",
    )


class ExportSpec(_Model):
    """What to build from the trained weights, after training, in a separate export Job."""

    enabled: bool = Field(
        default=True, description="Run the export step; false uploads only the adapter/weights."
    )
    onnx: OnnxExportSpec = _nested(OnnxExportSpec, "ONNX export for onnxruntime-genai.")
    merged_model: bool = Field(
        default=True,
        description="Also upload the merged model as safetensors (adapter folded into the base).",
    )
    parity_prompts: int = Field(
        default=8,
        ge=0,
        le=64,
        description="Held-out prompts (training rows without eval data) generated by both PyTorch and "
        "the ONNX model to measure their agreement; 0 skips the check.",
    )
    parity_tokens: int = Field(
        default=8, ge=1, le=256, description="Two generations agree when their first this many tokens match."
    )
    max_new_tokens: int = Field(
        default=16, ge=1, le=1024, description="Longest generation of the parity check."
    )
    min_parity: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Fail the export when the share of agreeing prompts is below this; "
        "unset: only report it.",
    )


class OutputSpec(_Model):
    """Where artifacts and checkpoints go, and the S3 connection used by default for model and data."""

    uri: OutputUri = Field(
        description="S3 prefix for this job's artifacts (s3://bucket/prefix); each run writes under "
        "<uri>/<runId>/."
    )
    endpoint: EndpointUrl | None = Field(
        default=None, description="S3 endpoint URL for S3-compatible stores; unset: AWS S3."
    )
    region: str | None = Field(default=None, max_length=64, description="S3 region.")
    force_path_style: bool = Field(
        default=False,
        description="Use path-style URLs (endpoint/bucket/key), as most S3-compatible stores need.",
    )
    credentials_secret_ref: CredentialsSecretRef | None = Field(
        default=None,
        description="Secret with the S3 credentials; unset: the pod's ambient credentials "
        "(workload identity).",
    )


class FineTuneJobSpec(_Model):
    """Desired state of a FineTuneJob."""

    cel_rules = (
        Cel(
            "self.method == 'full' || has(self.lora)",
            "lora is required when method is lora or qlora (lora: {} takes the defaults)",
            lambda s: s.method == Method.FULL or s.lora is not None,
            reason="FieldValueRequired",
            field_path=".lora",
        ),
        Cel(
            "self.method != 'full' || !has(self.lora)",
            "lora must not be set when method is full",
            lambda s: s.method != Method.FULL or s.lora is None,
            reason="FieldValueForbidden",
            field_path=".lora",
        ),
        Cel(
            "self.method != 'full' || !self.export.onnx.adapter",
            "export.onnx.adapter needs a LoRA: method lora or qlora",
            lambda s: s.method != Method.FULL or not s.export.onnx.adapter,
            reason="FieldValueForbidden",
            field_path=".export.onnx.adapter",
        ),
        Cel(
            "self.training.precision != 'fp16' || self.resources.gpusPerNode > 0",
            "training.precision fp16 needs GPUs (resources.gpusPerNode >= 1); use fp32 or bf16 on CPU",
            lambda s: s.training.precision != "fp16" or s.resources.gpus_per_node > 0,
            field_path=".training.precision",
        ),
        Cel(
            "!has(self.evaluation) || !has(self.evaluation.earlyStopping) || has(self.training.evalSteps)",
            "evaluation.earlyStopping needs training.evalSteps",
            lambda s: (
                s.evaluation is None
                or s.evaluation.early_stopping is None
                or s.training.eval_steps is not None
            ),
            reason="FieldValueRequired",
            field_path=".training.evalSteps",
        ),
        Cel(
            "has(self.dataset.evalUri) || has(self.dataset.evalRatio) || (!has(self.training.evalSteps) "
            "&& !has(self.evaluation))",
            "training.evalSteps and evaluation need eval data: set dataset.evalUri or dataset.evalRatio",
            lambda s: s.dataset.has_eval_data or (s.training.eval_steps is None and s.evaluation is None),
            reason="FieldValueRequired",
            field_path=".dataset.evalRatio",
        ),
        Cel(
            "self.method == 'full' || !has(self.lora) || !self.lora.useDora || !self.export.onnx.adapter",
            "export.onnx.adapter cannot carry DoRA magnitudes; set lora.useDora false or adapter false",
            lambda s: s.lora is None or not s.lora.use_dora or not s.export.onnx.adapter,
            reason="FieldValueForbidden",
            field_path=".export.onnx.adapter",
        ),
        Cel(
            "(!has(self.baseModel.credentialsSecretRef) || (has(self.output.credentialsSecretRef) "
            "&& self.baseModel.credentialsSecretRef == self.output.credentialsSecretRef)) "
            "&& (!has(self.dataset.credentialsSecretRef) || (has(self.output.credentialsSecretRef) "
            "&& self.dataset.credentialsSecretRef == self.output.credentialsSecretRef))",
            "baseModel.credentialsSecretRef and dataset.credentialsSecretRef must equal "
            "output.credentialsSecretRef: the trainer reads every S3 object with one set of credentials",
            lambda s: all(
                ref is None or ref == s.output.credentials_secret_ref
                for ref in (s.base_model.credentials_secret_ref, s.dataset.credentials_secret_ref)
            ),
            reason="FieldValueForbidden",
            field_path=".dataset.credentialsSecretRef",
        ),
        Cel(
            "!has(self.quantization) || self.method == 'qlora'",
            "quantization (4/8-bit base weights) is only valid with method qlora",
            lambda s: s.quantization is None or s.method == Method.QLORA,
            reason="FieldValueForbidden",
            field_path=".quantization",
        ),
    )

    base_model: ModelSource = Field(description="The base model to fine-tune.")
    dataset: DatasetSpec = Field(description="Training and evaluation data.")
    method: Annotated[Method, Cel.immutable("method is immutable; create a new FineTuneJob")] = Field(
        default=Method.LORA,
        description="lora: train a low-rank adapter; qlora: lora on a 4/8-bit quantized base; "
        "full: train all weights. Immutable.",
    )
    lora: LoraSpec | None = Field(default=None, description="LoRA settings; required for lora and qlora.")
    quantization: QuantizationSpec | None = Field(
        default=None,
        description="Base-weight quantization for qlora; unset: 4-bit nf4 with double quantization.",
    )
    training: TrainingSpec = _nested(
        TrainingSpec, f"Training hyperparameters; unset: the defaults ({DEFAULT_EPOCHS:g} epoch)."
    )
    evaluation: EvaluationSpec | None = Field(
        default=None, description="Task metrics and early stopping; unset: evalLoss and perplexity only."
    )
    resources: ResourcesSpec = _nested(ResourcesSpec, "Compute for the trainer pods.")
    export: ExportSpec = _nested(ExportSpec, "Artifacts built after training.")
    output: OutputSpec = Field(description="Where artifacts and checkpoints are written.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job if it runs longer than this (all Jobs together)."
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=100, description="Retries of a failed trainer pod (preemptions are not counted)."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the FineTuneJob this long after it finished; unset: keep it."
    )
    suspend: bool = Field(
        default=False,
        description="Suspend the job: running pods are stopped (after a checkpoint) until false.",
    )

    # Lifecycle knobs: changing them must not start a new run (and resuming must keep the checkpoints).
    RUN_ID_EXCLUDED_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"suspend", "active_deadline_seconds", "backoff_limit", "ttl_seconds_after_finished"}
    )

    @property
    def uses_adapter(self) -> bool:
        return self.method != Method.FULL

    @property
    def effective_quantization(self) -> QuantizationSpec | None:
        """qlora's base quantization with its defaults; None for the other methods."""
        if self.method != Method.QLORA:
            return None
        return self.quantization or QuantizationSpec()

    @property
    def training_precision(self) -> Literal["fp32", "bf16", "fp16"]:
        """training.precision with auto resolved: bf16 on GPUs, fp32 on CPU."""
        precision = self.training.precision
        if precision == "auto":
            return "bf16" if self.resources.gpus_per_node > 0 else "fp32"
        return precision

    def spec_digest(self) -> str:
        """sha256 of the canonical spec JSON (see spec_hash), recorded in the artifact manifest."""
        data = self.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, exclude=set(self.RUN_ID_EXCLUDED_FIELDS)
        )
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def spec_hash(self) -> str:
        """Run id: sha256 of the canonical spec JSON, first 12 hex characters.

        Fields equal to their defaults are left out, so a spec hashes the same whether the API server
        filled in the defaults or not, and adding a defaulted field later keeps existing run ids.
        """
        return self.spec_digest()[:RUN_ID_LENGTH]


# --- status -------------------------------------------------------------------------------------------


class Phase(StrEnum):
    """Coarse state of a FineTuneJob."""

    PENDING = "Pending"
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
    MANIFEST = "manifest"
    METRICS = "metrics"


class Condition(_LenientModel):
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


class Progress(_LenientModel):
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


class Checkpoint(_LenientModel):
    """A checkpoint in S3 that a restarted trainer resumes from."""

    step: int = Field(ge=0, description="Optimizer step of the checkpoint.")
    uri: str = Field(max_length=1024, description="S3 URI of the checkpoint folder.")
    time: datetime | None = Field(default=None, description="When the checkpoint was written.")


class Artifact(_LenientModel):
    """A file or folder the job produced."""

    kind: ArtifactKind = Field(description="adapter, merged, onnx, onnxAdapter, manifest or metrics.")
    uri: str = Field(max_length=1024, description="S3 URI of the artifact.")
    size_bytes: int | None = Field(default=None, ge=0, description="Size in bytes (all files of a folder).")
    sha256: str | None = Field(
        default=None,
        pattern="^[0-9a-f]{64}$",
        description="sha256 of the file (of the manifest for a folder).",
    )


class TrainerReport(_LenientModel):
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
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Final metrics of the finished training and export (live ones: progress.metrics).",
    )
    message: str | None = Field(
        default=None, max_length=32768, description="Human-readable summary of the state."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def operator_fields(self) -> dict[str, Any]:
        """The operator's part, as written to the API (unset fields as null, which a merge patch
        removes); the trainer's fields are left out."""
        return self.model_dump(mode="json", by_alias=True, exclude=set(self.TRAINER_FIELDS))


# --- the object ---------------------------------------------------------------------------------------


class ObjectMeta(_LenientModel):
    """The parts of metadata the operator reads."""

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None


class FineTuneJob(_Model):
    """FineTuneJob fine-tunes a language model (LoRA, QLoRA or full), exports it (ONNX for
    onnxruntime-genai) and uploads the artifacts to S3."""

    # Only the API server sees metadata.name in the schema; the Python twin checks the parsed metadata.
    cel_rules = (
        Cel(
            f"self.metadata.name.size() <= {NAME_MAX_LENGTH}",
            f"metadata.name must be at most {NAME_MAX_LENGTH} characters (child Job names add a suffix)",
            lambda j: j.metadata.name is None or len(j.metadata.name) <= NAME_MAX_LENGTH,
        ),
    )

    api_version: Literal["kubetune.dev/v1alpha1"] = "kubetune.dev/v1alpha1"
    kind: Literal["FineTuneJob"] = "FineTuneJob"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> FineTuneJob:
        """Parse an object from the API (a dict, or a Kopf body/Mapping view).

        Raises pydantic.ValidationError for a bad spec; the operator turns it into a permanent error.
        """
        return cls.model_validate(plain_data(obj))

    def spec_hash(self) -> str:
        return self.spec.spec_hash()


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, `path: message`, for a status message or a Kubernetes Event."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(object)"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def plain_data(value: Any) -> Any:
    """Plain dicts and lists from Kopf's read-only Mapping views (they must not outlive an event)."""
    if isinstance(value, Mapping):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    return value

"""What a FineTuneJob runs on and produces: resources, export and output."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from kubetune_api.base import (
    S3_PREFIX_PATTERN,
    ApiModel,
    EndpointUrl,
    OutputUri,
    Quantity,
    nested_default,
)
from kubetune_api.cel import Cel
from kubetune_api.spec_sources import CredentialsSecretRef


class Toleration(ApiModel):
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


class ResourcesSpec(ApiModel):
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


class Int4Spec(ApiModel):
    """int4 weight-only quantization of the ONNX model (onnxruntime-genai model builder).

    The defaults (k_quant, block size 16, the last MatMul in int8) are the settings that held held-out
    exact match equal to PyTorch's on two SmolLM2 tasks, merged and as base+adapter, where the former
    defaults (block size 32, the most sensitive layers in int8 too) lost a row in 40; docs/export.md has
    the figures per setting and bench/int4_settings.py measures them."""

    algorithm: Literal["default", "rtn", "k_quant"] = Field(
        default="k_quant", description="Quantization algorithm (builder algo_config)."
    )
    last_matmul: Literal["int4", "int8"] = Field(
        default="int8",
        description="Type of the last MatMul (lm_head); int8 protects fine-tuned accuracy "
        "(builder matmul_mixed_precision last_matmul).",
    )
    mixed_layers: Literal["int4", "int8"] = Field(
        default="int4",
        description="Type of the most quantization-sensitive layers "
        "(builder matmul_mixed_precision mixed_layers); int8 costs decode speed and, with block size 16, "
        "bought no accuracy in our measurements.",
    )
    block_size: Literal[16, 32, 64, 128, 256] = Field(
        default=16, description="Quantization block size; smaller blocks keep more accuracy."
    )
    accuracy_level: Literal[1, 2, 3, 4] | None = Field(
        default=None,
        description="Minimum compute precision of int4 MatMuls (1 fp32, 2 fp16, 3 bf16, 4 int8); unset: "
        "the builder's default for the execution provider (4 on cpu: int8 activations, the fast path).",
    )


# Precision x execution provider: what one export target builds. fp16 has no CPU kernels.
Precision = Literal["int4", "int8", "fp16", "fp32"]
ExecutionProvider = Literal["cpu", "cuda"]


class ExportTarget(ApiModel):
    """One ONNX model for onnxruntime-genai: a weight precision for an execution provider. Its files go
    to <run>/onnx/<precision>-<executionProvider>/ (and onnx-adapter/<...>/ with export.adapter)."""

    cel_rules = (
        Cel(
            # Written with has(): the API server also checks this rule against a bare `{}` item.
            "!has(self.precision) || self.precision != 'fp16' "
            "|| (has(self.executionProvider) && self.executionProvider == 'cuda')",
            "export target fp16 needs executionProvider cuda (there are no fp16 CPU kernels); "
            "for cpu use fp32, int8 or int4",
            lambda t: t.precision != "fp16" or t.execution_provider == "cuda",
            field_path=".precision",
        ),
    )

    precision: Precision = Field(default="int4", description="Weight precision: int4, int8, fp16 or fp32.")
    execution_provider: ExecutionProvider = Field(
        default="cpu", description="onnxruntime execution provider the model is built for: cpu or cuda."
    )
    int4: Int4Spec = nested_default(Int4Spec, "int4 quantization settings (precision int4 only).")

    @property
    def name(self) -> str:
        """The target's folder name and its name in status and manifest, e.g. int4-cpu."""
        return f"{self.precision}-{self.execution_provider}"


# What a gate can hold a target to. All of them improve upwards, so a gate is a minimum.
GateMetric = Literal["exactMatch", "f1", "rougeL", "parity", "parityTokenAgreement", "tokenizerAgreement"]
# Scored on the answers, so computed only with held-out rows; f1 and rougeL also need to be asked for.
GATE_TASK_METRICS: tuple[GateMetric, ...] = ("exactMatch", "f1", "rougeL")


class GateRule(ApiModel):
    """A minimum an exported target must reach on the held-out rows before it is promoted."""

    metric: GateMetric = Field(
        description="exactMatch, f1, rougeL: task metrics of the ONNX model's greedy answers; parity: share "
        "of prompts whose first parityTokens tokens equal PyTorch's; parityTokenAgreement: share of "
        "those tokens that are equal; tokenizerAgreement: share of prompts onnxruntime-genai's tokenizer "
        "encodes like transformers. With export.adapter the base+adapter pair is held to it too."
    )
    min: float = Field(ge=0, le=1, description="The least value that passes, e.g. 0.9.")


SharedBaseUri = Annotated[
    str,
    Field(min_length=8, max_length=1024),
    Cel.regex(S3_PREFIX_PATTERN, "export.sharedBaseUri must be an S3 URI: s3://bucket/prefix"),
]


def _unique_targets(targets: list[ExportTarget]) -> bool:
    names = [t.name for t in targets]
    return len(names) == len(set(names))


class ExportSpec(ApiModel):
    """What to build from the trained weights, after training, in a separate export Job."""

    cel_rules = (
        Cel(
            "!has(self.targets) || self.targets.all(t, self.targets.exists_one(u, "
            "(has(u.precision) ? u.precision : 'int4') == (has(t.precision) ? t.precision : 'int4') && "
            "(has(u.executionProvider) ? u.executionProvider : 'cpu') == "
            "(has(t.executionProvider) ? t.executionProvider : 'cpu')))",
            "export.targets must not list a precision and executionProvider pair twice",
            lambda e: _unique_targets(e.targets),
            # Not FieldValueDuplicate: the API server would print "Duplicate value" instead of the message.
            field_path=".targets",
        ),
        Cel(
            "!has(self.gate) || size(self.gate) == 0 || "
            "(has(self.targets) && size(self.targets) > 0 && has(self.evalSamples) && self.evalSamples > 0)",
            "export.gate needs something to measure: at least one export target and evalSamples > 0",
            lambda e: not e.gate or (bool(e.targets) and e.eval_samples > 0),
            reason="FieldValueInvalid",
            field_path=".gate",
        ),
    )

    enabled: bool = Field(
        default=True, description="Run the export step; false uploads only the adapter/weights."
    )
    targets: list[ExportTarget] = Field(
        default_factory=lambda: [ExportTarget()],
        max_length=8,
        description="ONNX models to build, one per precision and execution provider; each gets its own "
        "files, figures and status.exportTargets entry. Empty: no ONNX. Unset: one int4 cpu model.",
        json_schema_extra={"default": [{}]},
    )
    adapter: bool = Field(
        default=False,
        description="Also write the LoRA weights as a swappable .onnx_adapter per target, for a shared base "
        "ONNX model that takes them as inputs (multi-LoRA serving). The base is content-addressed and "
        "written once under sharedBaseUri; jobs on the same base reuse it. lora and qlora only.",
    )
    shared_base_uri: SharedBaseUri | None = Field(
        default=None,
        description="S3 prefix of the shared base ONNX models (export.adapter); unset: "
        "<output.uri>/onnx-bases. Jobs that should share a base must use the same prefix.",
    )
    merged_model: bool = Field(
        default=True,
        description="Also upload the merged model as safetensors (adapter folded into the base).",
    )
    eval_samples: int = Field(
        default=64,
        ge=0,
        le=1024,
        description="Held-out rows (training rows without eval data) answered greedily by PyTorch and by "
        "every target, sampled with dataset.seed: the targets' task metrics and their agreement with "
        "PyTorch are computed on them. 0 skips the check.",
    )
    parity_tokens: int = Field(
        default=8, ge=1, le=256, description="Two generations agree when their first this many tokens match."
    )
    max_new_tokens: int = Field(
        default=16, ge=1, le=1024, description="Longest generated answer of the check."
    )
    gate: list[GateRule] = Field(
        default_factory=list,
        max_length=8,
        description="Minimums every target must reach before anything is promoted. A run that misses one "
        "fails with QualityGateFailed and leaves its export under <run>/rejected/; empty: no gate.",
    )


class OutputSpec(ApiModel):
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
    keep_checkpoints: Literal["none", "best", "all"] = Field(
        default="all",
        description="Checkpoints left in S3 after a successful training. While training, the newest two "
        "and the best one (early stopping) are kept; afterwards all keeps those (the default: nothing "
        "is deleted that a later resume or inspection could want), best keeps only the best one by the "
        "early-stopping metric (the last one without early stopping), none deletes them all.",
    )

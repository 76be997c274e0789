"""What a FineTuneJob runs on and produces: resources, export and output."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from kubetune_api.base import (
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


class OnnxExportSpec(ApiModel):
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
    int4: Int4Spec = nested_default(Int4Spec, "int4 quantization settings (precision int4 only).")
    adapter: bool = Field(
        default=False,
        description="Also write the LoRA weights as a swappable .onnx_adapter for a base model that takes "
        "them as inputs (multi-LoRA serving). lora and qlora only.",
    )


class ExportSpec(ApiModel):
    """What to build from the trained weights, after training, in a separate export Job."""

    enabled: bool = Field(
        default=True, description="Run the export step; false uploads only the adapter/weights."
    )
    onnx: OnnxExportSpec = nested_default(OnnxExportSpec, "ONNX export for onnxruntime-genai.")
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

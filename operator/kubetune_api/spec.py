"""FineTuneJobSpec: the desired state, with the rules that span its sections."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
)

from kubetune_api.base import (
    ApiModel,
    KubernetesName,
    nested_default,
)
from kubetune_api.cel import Cel
from kubetune_api.spec_outputs import GATE_TASK_METRICS, ExportSpec, OutputSpec, ResourcesSpec
from kubetune_api.spec_sources import DatasetSpec, Method, ModelSource
from kubetune_api.spec_training import (
    DEFAULT_EPOCHS,
    EvaluationSpec,
    LoraSpec,
    QuantizationSpec,
    TrainingSpec,
)

RUN_ID_LENGTH = 12


class FineTuneJobSpec(ApiModel):
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
            "self.method != 'full' || !has(self.export.adapter) || !self.export.adapter",
            "export.adapter needs a LoRA: method lora or qlora",
            lambda s: s.method != Method.FULL or not s.export.adapter,
            reason="FieldValueForbidden",
            field_path=".export.adapter",
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
            "self.method == 'full' || !has(self.lora) || !self.lora.useDora || !has(self.export.adapter) "
            "|| !self.export.adapter",
            "export.adapter cannot carry DoRA magnitudes; set lora.useDora false or export.adapter false",
            lambda s: s.lora is None or not s.lora.use_dora or not s.export.adapter,
            reason="FieldValueForbidden",
            field_path=".export.adapter",
        ),
        Cel(
            # CEL has no equality between two object types of the schema: compare field by field.
            " && ".join(
                f"(!has(self.{source}.credentialsSecretRef) || (has(self.output.credentialsSecretRef)"
                + "".join(
                    f" && self.{source}.credentialsSecretRef.{key} == self.output.credentialsSecretRef.{key}"
                    for key in ("name", "accessKeyIdKey", "secretAccessKeyKey")
                )
                + "))"
                for source in ("baseModel", "dataset")
            ),
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
            "!has(self.export.gate) || self.export.gate.all(g, !(g.metric in ['f1', 'rougeL']) "
            "|| (has(self.evaluation) && has(self.evaluation.metrics) "
            "&& g.metric in self.evaluation.metrics))",
            "export.gate names f1 or rougeL, which are computed only when evaluation.metrics lists them: "
            "add the metric to evaluation.metrics or gate on exactMatch or parity",
            lambda s: all(
                g.metric not in ("f1", "rougeL")
                or (s.evaluation is not None and g.metric in s.evaluation.metrics)
                for g in s.export.gate
            ),
            reason="FieldValueInvalid",
            field_path=".export.gate",
        ),
        Cel(
            "!has(self.export.gate) "
            "|| !self.export.gate.exists(g, g.metric in ['exactMatch', 'f1', 'rougeL']) "
            "|| has(self.dataset.evalUri) || has(self.dataset.evalRatio)",
            "export.gate on a task metric needs held-out rows: set dataset.evalUri or dataset.evalRatio",
            lambda s: (
                s.dataset.has_eval_data or all(g.metric not in GATE_TASK_METRICS for g in s.export.gate)
            ),
            reason="FieldValueRequired",
            field_path=".dataset.evalRatio",
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
    training: TrainingSpec = nested_default(
        TrainingSpec, f"Training hyperparameters; unset: the defaults ({DEFAULT_EPOCHS:g} epoch)."
    )
    evaluation: EvaluationSpec | None = Field(
        default=None, description="Task metrics and early stopping; unset: evalLoss and perplexity only."
    )
    resources: ResourcesSpec = nested_default(ResourcesSpec, "Compute for the trainer pods.")
    export: ExportSpec = nested_default(ExportSpec, "Artifacts built after training.")
    output: OutputSpec = Field(description="Where artifacts and checkpoints are written.")
    queue_name: Annotated[
        KubernetesName | None, Cel.immutable("queueName is immutable; create a new FineTuneJob")
    ] = Field(
        default=None,
        description="Kueue LocalQueue that admits this job's workloads (trainer and export). Unset: the "
        "kueue.x-k8s.io/queue-name label of the FineTuneJob, if any; otherwise not queued. Immutable.",
    )
    workload_priority_class_name: KubernetesName | None = Field(
        default=None,
        description="Kueue WorkloadPriorityClass of the queued workloads (their priority in the queue, "
        "and who may preempt whom). Unset: the kueue.x-k8s.io/priority-class label, if any.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Fail the job if it runs longer than this, counted from the first start of training "
        "and covering every Job of the run (trainer restarts and export included; time spent queued "
        "before the first start is not counted). Edits apply to the running workload.",
    )
    backoff_limit: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Retries of a failed trainer (preemptions and checkpointed stops are not counted); "
        "for nodes > 1, restarts of the whole group. Edits apply to a running single-node trainer; a "
        "multi-node group keeps the value it started with (see the BackoffLimitApplied condition).",
    )
    preemption_limit: int = Field(
        default=20,
        ge=0,
        le=1000,
        description="Checkpointed stops a run may take (preemption, eviction, a drained node, suspension: "
        "each resumes from its checkpoint and is not counted in backoffLimit) before it fails with "
        "PreemptionLimitExceeded, so that a job that is always preempted ends. Edits apply at once.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the FineTuneJob this long after it finished; unset: keep it."
    )
    suspend: bool = Field(
        default=False,
        description="Suspend the job: running pods are stopped (after a checkpoint) until false.",
    )
    dry_run: bool = Field(
        default=False,
        description="Plan only: a small CPU-only pod reads the data and the model's config and tokenizer "
        "(no weights, no GPU) and reports status.plan (rendered examples, token lengths, label coverage, "
        "LoRA targets, trainable parameters, estimated peak memory, steps) and the Planned condition; "
        "nothing is trained or exported. Part of the run id: setting it to false starts the real run.",
    )

    # Lifecycle knobs: changing them must not start a new run (and resuming must keep the checkpoints).
    RUN_ID_EXCLUDED_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "suspend",
            "active_deadline_seconds",
            "backoff_limit",
            "preemption_limit",
            "ttl_seconds_after_finished",
            "queue_name",
            "workload_priority_class_name",
        }
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

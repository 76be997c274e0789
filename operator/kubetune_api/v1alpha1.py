"""FineTuneJob, kubetune.dev/v1alpha1: the one source of the API schema.

The models live in modules by section (base, spec_sources, spec_training, spec_outputs, spec, status);
this module names the API, assembles the object and re-exports every model under one name.

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

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
)

from kubetune_api.base import ApiModel as ApiModel
from kubetune_api.base import EndpointUrl as EndpointUrl
from kubetune_api.base import LenientModel as LenientModel
from kubetune_api.base import ModuleName as ModuleName
from kubetune_api.base import OutputUri as OutputUri
from kubetune_api.base import Quantity as Quantity
from kubetune_api.base import SecretKey as SecretKey
from kubetune_api.base import SecretName as SecretName
from kubetune_api.base import SourceUri as SourceUri
from kubetune_api.base import is_s3_uri as is_s3_uri
from kubetune_api.base import nested_default as nested_default
from kubetune_api.cel import Cel
from kubetune_api.plan import LabelCoverage as LabelCoverage
from kubetune_api.plan import MemoryEstimate as MemoryEstimate
from kubetune_api.plan import PlanProblem as PlanProblem
from kubetune_api.plan import PlanSeverity as PlanSeverity
from kubetune_api.plan import PlanStatus as PlanStatus
from kubetune_api.plan import TokenStats as TokenStats
from kubetune_api.spec import RUN_ID_LENGTH as RUN_ID_LENGTH
from kubetune_api.spec import FineTuneJobSpec as FineTuneJobSpec
from kubetune_api.spec_outputs import ExportSpec as ExportSpec
from kubetune_api.spec_outputs import ExportTarget as ExportTarget
from kubetune_api.spec_outputs import GateRule as GateRule
from kubetune_api.spec_outputs import Int4Spec as Int4Spec
from kubetune_api.spec_outputs import OutputSpec as OutputSpec
from kubetune_api.spec_outputs import ResourcesSpec as ResourcesSpec
from kubetune_api.spec_outputs import Toleration as Toleration
from kubetune_api.spec_sources import TEXT_FIELD_TEMPLATE as TEXT_FIELD_TEMPLATE
from kubetune_api.spec_sources import CredentialsSecretRef as CredentialsSecretRef
from kubetune_api.spec_sources import DatasetSpec as DatasetSpec
from kubetune_api.spec_sources import Method as Method
from kubetune_api.spec_sources import ModelSource as ModelSource
from kubetune_api.spec_sources import template_fields as template_fields
from kubetune_api.spec_training import DEFAULT_EPOCHS as DEFAULT_EPOCHS
from kubetune_api.spec_training import TASK_METRICS as TASK_METRICS
from kubetune_api.spec_training import EarlyStoppingSpec as EarlyStoppingSpec
from kubetune_api.spec_training import EvaluationSpec as EvaluationSpec
from kubetune_api.spec_training import LoraSpec as LoraSpec
from kubetune_api.spec_training import QuantizationSpec as QuantizationSpec
from kubetune_api.spec_training import TaskMetric as TaskMetric
from kubetune_api.spec_training import TrainingSpec as TrainingSpec
from kubetune_api.spec_training import WatchedMetric as WatchedMetric
from kubetune_api.status import LOSS_DECIMALS as LOSS_DECIMALS
from kubetune_api.status import Artifact as Artifact
from kubetune_api.status import ArtifactKind as ArtifactKind
from kubetune_api.status import Checkpoint as Checkpoint
from kubetune_api.status import Condition as Condition
from kubetune_api.status import ConditionStatus as ConditionStatus
from kubetune_api.status import ConditionType as ConditionType
from kubetune_api.status import ExportTargetStatus as ExportTargetStatus
from kubetune_api.status import FineTuneJobStatus as FineTuneJobStatus
from kubetune_api.status import GateResult as GateResult
from kubetune_api.status import Phase as Phase
from kubetune_api.status import Progress as Progress
from kubetune_api.status import TrainerReport as TrainerReport

GROUP = "kubetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ("ftj",)
CATEGORIES = ("kubetune",)

# Kueue's labels, also honoured on the FineTuneJob itself (spec fields win).
QUEUE_NAME_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_CLASS_LABEL = "kueue.x-k8s.io/priority-class"

# Child Job names append a suffix and the 12-character run id to the FineTuneJob's name, and Job names
# end up in 63-character label values, so the name must leave room for both.
NAME_MAX_LENGTH = 40


class ObjectMeta(LenientModel):
    """The parts of metadata the operator reads."""

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: datetime | None = None


class FineTuneJob(ApiModel):
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

    @property
    def queue_name(self) -> str | None:
        """The Kueue LocalQueue of this job's workloads; None when it is not queued."""
        return self.spec.queue_name or self.metadata.labels.get(QUEUE_NAME_LABEL) or None

    @property
    def workload_priority_class(self) -> str | None:
        return (
            self.spec.workload_priority_class_name or self.metadata.labels.get(PRIORITY_CLASS_LABEL) or None
        )


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

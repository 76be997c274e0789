"""FineTuneSweep, kubetune.dev/v1alpha1: a hyperparameter search over FineTuneJobs.

A sweep holds a FineTuneJob template (its spec is `FineTuneJobSpec`, reused as is), a search space of
tunable spec fields, an objective (a key of the trials' status.metrics) and how many trials may run
at once. The operator creates one FineTuneJob per trial, named `<sweep>-<index>`, reads each trial's
final metric from its status, and reports the best trial with its artifacts.

Like the FineTuneJob, every cross-field rule is a CEL rule with a Python twin (kubetune_api.cel); the
CRD is generated from these models (`python -m kubetune_api.crd`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from kubetune_api.base import ApiModel
from kubetune_api.cel import Cel
from kubetune_api.spec import FineTuneJobSpec
from kubetune_api.sweep_status import FINISHED_TRIAL_PHASES as FINISHED_TRIAL_PHASES
from kubetune_api.sweep_status import MAX_TRIALS as MAX_TRIALS
from kubetune_api.sweep_status import BestTrial as BestTrial
from kubetune_api.sweep_status import FineTuneSweepStatus as FineTuneSweepStatus
from kubetune_api.sweep_status import SweepPhase as SweepPhase
from kubetune_api.sweep_status import TrialPhase as TrialPhase
from kubetune_api.sweep_status import TrialStatus as TrialStatus
from kubetune_api.v1alpha1 import NAME_MAX_LENGTH, ObjectMeta, plain_data

SWEEP_KIND = "FineTuneSweep"
SWEEP_PLURAL = "finetunesweeps"
SWEEP_SINGULAR = "finetunesweep"
SWEEP_SHORT_NAMES = ("fts",)
SWEEP_CATEGORIES = ("kubetune",)

# Every trial is a FineTuneJob named `<sweep>-<index>`, within the FineTuneJob's name limit.
SWEEP_NAME_MAX_LENGTH = NAME_MAX_LENGTH - len(f"-{MAX_TRIALS - 1}")


class TunablePath(StrEnum):
    """The FineTuneJob spec fields a sweep may vary, by their path in the spec (wire names)."""

    LEARNING_RATE = "training.learningRate"
    MAX_STEPS = "training.maxSteps"
    EPOCHS = "training.epochs"
    BATCH_SIZE = "training.batchSize"
    GRADIENT_ACCUMULATION_STEPS = "training.gradientAccumulationSteps"
    WARMUP_RATIO = "training.warmupRatio"
    LORA_R = "lora.r"
    LORA_ALPHA = "lora.alpha"
    LORA_DROPOUT = "lora.dropout"


# Integer fields: their values must be whole numbers; random ranges are rounded.
INTEGER_PATHS = frozenset(
    {
        TunablePath.MAX_STEPS,
        TunablePath.BATCH_SIZE,
        TunablePath.GRADIENT_ACCUMULATION_STEPS,
        TunablePath.LORA_R,
        TunablePath.LORA_ALPHA,
    }
)
_INTEGER_LIST = "[" + ", ".join(f"'{p.value}'" for p in sorted(INTEGER_PATHS)) + "]"


class SearchParameter(ApiModel):
    """One dimension of the search: a spec field and the values it takes."""

    cel_rules = (
        Cel(
            "has(self.values) ? !has(self.min) && !has(self.max) : has(self.min) && has(self.max)",
            "a parameter needs either values or a range (min and max), not both",
            lambda p: (
                (p.min is None and p.max is None) if p.values is not None else None not in (p.min, p.max)
            ),
            reason="FieldValueInvalid",
        ),
        Cel(
            "!has(self.min) || !has(self.max) || self.min < self.max",
            "parameter min must be below max",
            lambda p: p.min is None or p.max is None or p.min < p.max,
            field_path=".max",
        ),
        Cel(
            "!has(self.scale) || has(self.min)",
            "scale applies to a range (min and max) only",
            lambda p: p.scale is None or p.min is not None,
            reason="FieldValueForbidden",
            field_path=".scale",
        ),
        Cel(
            "!has(self.scale) || self.scale != 'log' || !has(self.min) || self.min > 0",
            "a log scale needs min > 0",
            lambda p: p.scale != "log" or p.min is None or p.min > 0,
            field_path=".min",
        ),
        Cel(
            f"!(self.path in {_INTEGER_LIST}) || !has(self.values) "
            "|| self.values.all(v, double(int(v)) == v)",
            f"the values of an integer field ({', '.join(sorted(INTEGER_PATHS))}) must be whole numbers",
            lambda p: (
                p.path not in INTEGER_PATHS
                or p.values is None
                or all(float(v).is_integer() for v in p.values)
            ),
            field_path=".values",
        ),
    )

    path: TunablePath = Field(description="The FineTuneJob spec field to vary, e.g. training.learningRate.")
    values: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TRIALS,
        description="The values to try (grid or random). Excludes min and max.",
    )
    min: float | None = Field(
        default=None, ge=-1e9, le=1e9, description="Lower bound of a range (algorithm random only)."
    )
    max: float | None = Field(
        default=None, ge=-1e9, le=1e9, description="Upper bound of a range (algorithm random only)."
    )
    scale: Literal["linear", "log"] | None = Field(
        default=None,
        description="How a range is sampled: linear (uniform) or log (log-uniform, min > 0); unset: linear.",
    )

    @property
    def is_range(self) -> bool:
        return self.values is None


ObjectiveMetric = Literal["evalLoss", "evalPerplexity", "evalExactMatch", "evalF1", "evalRougeL"]
# The evaluation.metrics entry each task metric needs in the template.
TASK_OBJECTIVES: dict[str, str] = {"evalExactMatch": "exactMatch", "evalF1": "f1", "evalRougeL": "rougeL"}


class Objective(ApiModel):
    """What the sweep optimizes: a key of the trials' status.metrics (and status.progress.metrics)."""

    metric: ObjectiveMetric = Field(
        description="The trial metric: evalLoss, evalPerplexity, or a task metric (evalExactMatch, evalF1, "
        "evalRougeL) that the template's evaluation.metrics lists."
    )
    direction: Literal["minimize", "maximize"] = Field(
        description="minimize (losses, perplexity) or maximize (task metrics)."
    )

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a < b if self.direction == "minimize" else a > b


class SweepEarlyStopping(ApiModel):
    """Stop running trials that cannot beat the best finished one."""

    min_progress_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="A running trial is judged once it has done this share of its steps "
        "(status.progress.progressPercentage) and reported a live metric (status.progress.metrics).",
    )


class TemplateMeta(ApiModel):
    """Labels and annotations every trial FineTuneJob gets (e.g. Kueue's queue-name label)."""

    labels: dict[str, str] = Field(default_factory=dict, description="Labels of each trial.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of each trial.")


class TrialTemplate(ApiModel):
    """The FineTuneJob every trial starts from; the sweep's parameters replace its fields."""

    metadata: TemplateMeta = Field(default_factory=TemplateMeta, description="Labels and annotations.")
    spec: FineTuneJobSpec = Field(description="The FineTuneJob spec of every trial, before the parameters.")


def _has_lora_parameter(s: FineTuneSweepSpec) -> bool:
    return any(p.path.startswith("lora.") for p in s.parameters)


def _sweeps(s: FineTuneSweepSpec, path: TunablePath) -> bool:
    return any(p.path == path for p in s.parameters)


class FineTuneSweepSpec(ApiModel):
    """Desired state of a FineTuneSweep."""

    cel_rules = (
        Cel(
            "self.algorithm != 'random' || has(self.maxTrials)",
            "maxTrials is required for algorithm random",
            lambda s: s.algorithm != "random" or s.max_trials is not None,
            reason="FieldValueRequired",
            field_path=".maxTrials",
        ),
        Cel(
            "self.algorithm == 'random' || self.parameters.all(p, has(p.values))",
            "a range (min and max) needs algorithm random; grid takes values",
            lambda s: s.algorithm == "random" or all(not p.is_range for p in s.parameters),
            field_path=".parameters",
        ),
        Cel(
            "self.parameters.all(p, self.parameters.exists_one(q, q.path == p.path))",
            "each parameter path may appear once",
            lambda s: len({p.path for p in s.parameters}) == len(s.parameters),
            field_path=".parameters",
        ),
        Cel(
            "!self.parameters.exists(p, p.path.startsWith('lora.')) || has(self.template.spec.lora)",
            "lora.* parameters need a template with lora (method lora or qlora)",
            lambda s: not _has_lora_parameter(s) or s.template.spec.lora is not None,
            reason="FieldValueRequired",
            field_path=".template.spec.lora",
        ),
        Cel(
            "!self.parameters.exists(p, p.path == 'training.maxSteps') "
            "|| !has(self.template.spec.training.epochs)",
            "a training.maxSteps parameter needs a template without training.epochs",
            lambda s: not _sweeps(s, TunablePath.MAX_STEPS) or s.template.spec.training.epochs is None,
            reason="FieldValueForbidden",
            field_path=".template.spec.training.epochs",
        ),
        Cel(
            "!self.parameters.exists(p, p.path == 'training.epochs') "
            "|| !has(self.template.spec.training.maxSteps)",
            "a training.epochs parameter needs a template without training.maxSteps",
            lambda s: not _sweeps(s, TunablePath.EPOCHS) or s.template.spec.training.max_steps is None,
            reason="FieldValueForbidden",
            field_path=".template.spec.training.maxSteps",
        ),
        Cel(
            "!self.parameters.exists(p, p.path == 'training.warmupRatio') "
            "|| !has(self.template.spec.training.warmupSteps)",
            "a training.warmupRatio parameter needs a template without training.warmupSteps",
            lambda s: (
                not _sweeps(s, TunablePath.WARMUP_RATIO) or s.template.spec.training.warmup_steps is None
            ),
            reason="FieldValueForbidden",
            field_path=".template.spec.training.warmupSteps",
        ),
        Cel(
            "has(self.template.spec.dataset.evalUri) || has(self.template.spec.dataset.evalRatio)",
            "the objective is an evaluation metric: set template.spec.dataset.evalUri or evalRatio",
            lambda s: s.template.spec.dataset.has_eval_data,
            reason="FieldValueRequired",
            field_path=".template.spec.dataset.evalRatio",
        ),
        Cel(
            "[['evalExactMatch', 'exactMatch'], ['evalF1', 'f1'], ['evalRougeL', 'rougeL']].all(m, "
            "self.objective.metric != m[0] || (has(self.template.spec.evaluation) "
            "&& has(self.template.spec.evaluation.metrics) "
            "&& m[1] in self.template.spec.evaluation.metrics))",
            "a task-metric objective needs template.spec.evaluation.metrics to list it "
            "(exactMatch, f1 or rougeL)",
            lambda s: (
                s.objective.metric not in TASK_OBJECTIVES
                or (
                    s.template.spec.evaluation is not None
                    and TASK_OBJECTIVES[s.objective.metric] in s.template.spec.evaluation.metrics
                )
            ),
            reason="FieldValueRequired",
            field_path=".objective.metric",
        ),
        Cel(
            "!has(self.template.spec.ttlSecondsAfterFinished)",
            "template.spec.ttlSecondsAfterFinished is not allowed: the sweep reads its finished trials "
            "(deleting the sweep deletes them)",
            lambda s: s.template.spec.ttl_seconds_after_finished is None,
            reason="FieldValueForbidden",
            field_path=".template.spec.ttlSecondsAfterFinished",
        ),
    )

    template: TrialTemplate = Field(description="The FineTuneJob each trial starts from.")
    algorithm: Literal["grid", "random"] = Field(
        default="grid",
        description="grid: every combination of the parameters' values, in order (at most maxTrials); "
        "random: maxTrials samples drawn with seed.",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of algorithm random; the same seed, the same trials."
    )
    max_trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description=f"Trials to run: required for random, a cap for grid (unset: every combination, at most "
        f"{MAX_TRIALS}).",
    )
    parameters: list[SearchParameter] = Field(
        min_length=1, max_length=8, description="The search space: one entry per varied spec field."
    )
    objective: Objective = Field(description="The metric the best trial is chosen by, and its direction.")
    parallelism: int = Field(
        default=2, ge=1, le=MAX_TRIALS, description="At most this many unfinished trials at once."
    )
    early_stopping: SweepEarlyStopping | None = Field(
        default=None,
        description="Suspend (spec.suspend) running trials whose live metric is already worse than the best "
        "finished trial's final metric; unset: every trial runs to its end.",
    )

    @model_validator(mode="after")
    def _grid_size(self) -> FineTuneSweepSpec:
        # CEL cannot multiply the list sizes; the operator reports this as InvalidSpec (Stalled).
        if self.algorithm == "grid" and self.max_trials is None and self.grid_size() > MAX_TRIALS:
            raise ValueError(
                f"the grid has {self.grid_size()} combinations, more than {MAX_TRIALS}: set maxTrials "
                "or use fewer values"
            )
        return self

    def grid_size(self) -> int:
        size = 1
        for p in self.parameters:
            size *= len(p.values or ())
        return size


class FineTuneSweep(ApiModel):
    """FineTuneSweep searches hyperparameters: one FineTuneJob per trial, the best one by an objective
    metric."""

    cel_rules = (
        Cel(
            f"self.metadata.name.size() <= {SWEEP_NAME_MAX_LENGTH}",
            f"metadata.name must be at most {SWEEP_NAME_MAX_LENGTH} characters (trials are <name>-<index>)",
            lambda s: s.metadata.name is None or len(s.metadata.name) <= SWEEP_NAME_MAX_LENGTH,
        ),
    )

    api_version: Literal["kubetune.dev/v1alpha1"] = "kubetune.dev/v1alpha1"
    kind: Literal["FineTuneSweep"] = "FineTuneSweep"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: FineTuneSweepSpec
    status: FineTuneSweepStatus = Field(default_factory=FineTuneSweepStatus)

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> FineTuneSweep:
        """Parse an object from the API; raises pydantic.ValidationError for a bad spec."""
        return cls.model_validate(plain_data(obj))


__all__ = [
    "FINISHED_TRIAL_PHASES",
    "INTEGER_PATHS",
    "MAX_TRIALS",
    "SWEEP_KIND",
    "SWEEP_NAME_MAX_LENGTH",
    "SWEEP_PLURAL",
    "BestTrial",
    "FineTuneSweep",
    "FineTuneSweepSpec",
    "FineTuneSweepStatus",
    "Objective",
    "SearchParameter",
    "SweepEarlyStopping",
    "SweepPhase",
    "TemplateMeta",
    "TrialPhase",
    "TrialStatus",
    "TrialTemplate",
    "TunablePath",
]

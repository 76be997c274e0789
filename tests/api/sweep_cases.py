"""Shared data of the FineTuneSweep API tests: the example sweep and a table of bad sweeps.

Each bad sweep is one edit of examples/finetunesweep-tiny.yaml, with the words expected from pydantic
(the Python twins) and from the API server (the CEL rules), so both are tested from the same cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from spec_edits import REPO_ROOT, Edit, Obj, load
from spec_edits import all_ as _all
from spec_edits import delete as _del
from spec_edits import set_ as _set

SWEEP = REPO_ROOT / "examples" / "finetunesweep-tiny.yaml"


def sweep() -> Obj:
    return load(SWEEP)


def _params(*params: dict[str, object]) -> Edit:
    return _set("spec.parameters", list(params))


LR = "training.learningRate"


@dataclass(frozen=True)
class BadSweep:
    id: str
    edit: Edit
    loc: str  # where pydantic reports it (dotted, camelCase)
    message: str  # substring of both pydantic's and the API server's error
    server: str | None = None  # the API server's words, where they differ from `message`

    def apply(self) -> Obj:
        obj = sweep()
        self.edit(obj)
        return obj


BAD_SWEEPS = [
    BadSweep(
        "unknown-path",
        _params({"path": "training.momentum", "values": [0.9]}),
        "spec.parameters.0.path",
        "'training.learningRate'",
        'Unsupported value: "training.momentum"',
    ),
    BadSweep(
        "random-without-max-trials",
        _set("spec.algorithm", "random"),
        "spec",
        "maxTrials is required for algorithm random",
    ),
    BadSweep(
        "range-with-grid",
        _params({"path": LR, "min": 0.0001, "max": 0.01}),
        "spec",
        "a range (min and max) needs algorithm random; grid takes values",
    ),
    BadSweep(
        "values-and-range",
        _all(
            _set("spec.algorithm", "random"),
            _set("spec.maxTrials", 4),
            _params({"path": LR, "values": [0.1], "min": 0.1, "max": 0.2}),
        ),
        "spec.parameters.0",
        "a parameter needs either values or a range (min and max), not both",
    ),
    BadSweep(
        "min-only",
        _all(_set("spec.algorithm", "random"), _set("spec.maxTrials", 4), _params({"path": LR, "min": 0.1})),
        "spec.parameters.0",
        "a parameter needs either values or a range (min and max), not both",
    ),
    BadSweep(
        "min-above-max",
        _all(
            _set("spec.algorithm", "random"),
            _set("spec.maxTrials", 4),
            _params({"path": LR, "min": 0.2, "max": 0.1}),
        ),
        "spec.parameters.0",
        "parameter min must be below max",
    ),
    BadSweep(
        "log-scale-from-zero",
        _all(
            _set("spec.algorithm", "random"),
            _set("spec.maxTrials", 4),
            _params({"path": LR, "min": 0, "max": 0.1, "scale": "log"}),
        ),
        "spec.parameters.0",
        "a log scale needs min > 0",
    ),
    BadSweep(
        "scale-with-values",
        _params({"path": LR, "values": [0.1], "scale": "log"}),
        "spec.parameters.0",
        "scale applies to a range (min and max) only",
    ),
    BadSweep(
        "fractional-rank",
        _params({"path": "lora.r", "values": [4, 8.5]}),
        "spec.parameters.0",
        "must be whole numbers",
    ),
    BadSweep(
        "path-twice",
        _params({"path": LR, "values": [0.1]}, {"path": LR, "values": [0.2]}),
        "spec",
        "each parameter path may appear once",
    ),
    BadSweep(
        "lora-parameter-on-full",
        _all(_set("spec.template.spec.method", "full"), _del("spec.template.spec.lora")),
        "spec",
        "lora.* parameters need a template with lora (method lora or qlora)",
    ),
    BadSweep(
        "max-steps-with-epochs",
        _all(
            _params({"path": "training.maxSteps", "values": [5, 10]}),
            _del("spec.template.spec.training.maxSteps"),
            _set("spec.template.spec.training.epochs", 1),
        ),
        "spec",
        "a training.maxSteps parameter needs a template without training.epochs",
    ),
    BadSweep(
        "objective-without-eval-data",
        _del("spec.template.spec.dataset.evalRatio"),
        "spec",
        "the objective is an evaluation metric: set template.spec.dataset.evalUri or evalRatio",
    ),
    BadSweep(
        "task-objective-not-evaluated",
        _set("spec.objective", {"metric": "evalExactMatch", "direction": "maximize"}),
        "spec",
        "a task-metric objective needs template.spec.evaluation.metrics to list it",
    ),
    BadSweep(
        "unknown-objective",
        _set("spec.objective.metric", "accuracy"),
        "spec.objective.metric",
        "'evalLoss'",
        'Unsupported value: "accuracy"',
    ),
    BadSweep(
        "template-ttl",
        _set("spec.template.spec.ttlSecondsAfterFinished", 60),
        "spec",
        "template.spec.ttlSecondsAfterFinished is not allowed",
    ),
    BadSweep(
        "template-rejected-by-the-finetunejob-model",
        _set("spec.template.spec.lora.r", 0),
        "spec.template.spec.lora.r",
        "greater than or equal to 1",
    ),
    BadSweep(
        "template-cel-rule",
        _set("spec.template.spec.training.epochs", 2),
        "spec.template.spec.training",
        "training.maxSteps and training.epochs are mutually exclusive",
    ),
    BadSweep(
        "parallelism-zero",
        _set("spec.parallelism", 0),
        "spec.parallelism",
        "greater than or equal to 1",
    ),
    BadSweep(
        "long-name",
        _set("metadata.name", "s" * 38),
        "",
        "metadata.name must be at most 37 characters",
    ),
]

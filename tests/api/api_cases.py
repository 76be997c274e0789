"""Shared data of the API tests: the example manifests and a table of bad specs.

Each bad spec is one edit of the tiny example, with the words expected from pydantic and from the
API server, so the CEL rules and their Python twins are tested against the same cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from spec_edits import EXAMPLES as EXAMPLES
from spec_edits import REPO_ROOT as REPO_ROOT
from spec_edits import TINY, Edit, Obj, load
from spec_edits import all_ as _all
from spec_edits import delete as _del
from spec_edits import set_ as _set


def tiny() -> Obj:
    return load(TINY)


@dataclass(frozen=True)
class BadSpec:
    id: str
    edit: Edit
    loc: str  # where pydantic reports it (dotted, camelCase; "" for the object itself)
    pydantic: str  # substring of pydantic's error
    server: str  # substring of the API server's error (kubectl apply --dry-run=server)

    def apply(self) -> Obj:
        obj = tiny()
        self.edit(obj)
        return obj


BAD_SPECS = [
    BadSpec(
        "bad-method",
        _set("spec.method", "prefix"),
        "spec.method",
        "'lora', 'qlora' or 'full'",
        'Unsupported value: "prefix"',
    ),
    BadSpec(
        "lora-r-zero",
        _set("spec.lora.r", 0),
        "spec.lora.r",
        "greater than or equal to 1",
        "spec.lora.r in body should be greater than or equal to 1",
    ),
    BadSpec(
        "lora-r-negative",
        _set("spec.lora.r", -4),
        "spec.lora.r",
        "greater than or equal to 1",
        "spec.lora.r in body should be greater than or equal to 1",
    ),
    BadSpec(
        "missing-output", _del("spec.output"), "spec.output", "Field required", "spec.output: Required value"
    ),
    BadSpec(
        "inline-access-key",
        _set("spec.output.credentialsSecretRef.accessKey", "AKIAEXAMPLE"),
        "spec.output.credentialsSecretRef.accessKey",
        "Extra inputs are not permitted",
        'unknown field "spec.output.credentialsSecretRef.accessKey"',
    ),
    BadSpec(
        "inline-secret-key-on-output",
        _set("spec.output.secretAccessKey", "not-a-secret"),
        "spec.output.secretAccessKey",
        "Extra inputs are not permitted",
        'unknown field "spec.output.secretAccessKey"',
    ),
    BadSpec(
        "inline-credentials-object",
        _set("spec.dataset.credentials", {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "x"}),
        "spec.dataset.credentials",
        "Extra inputs are not permitted",
        'unknown field "spec.dataset.credentials"',
    ),
    BadSpec(
        "secret-name-not-a-name",
        _set("spec.output.credentialsSecretRef.name", "My_Secret"),
        "spec.output.credentialsSecretRef.name",
        "must be the name of a Secret",
        "must be the name of a Secret",
    ),
    BadSpec(
        "steps-and-epochs",
        _set("spec.training.epochs", 1),
        "spec.training",
        "training.maxSteps and training.epochs are mutually exclusive",
        "training.maxSteps and training.epochs are mutually exclusive",
    ),
    BadSpec(
        "eval-steps-without-eval-data",
        _all(_del("spec.dataset.evalRatio"), _set("spec.training.evalSteps", 2)),
        "spec",
        "training.evalSteps and evaluation need eval data",
        "training.evalSteps and evaluation need eval data",
    ),
    BadSpec(
        "evaluation-without-eval-data",
        _all(_del("spec.dataset.evalRatio"), _set("spec.evaluation", {"samples": 4})),
        "spec",
        "training.evalSteps and evaluation need eval data",
        "training.evalSteps and evaluation need eval data",
    ),
    BadSpec(
        "response-field-without-template",
        _all(_del("spec.dataset.textTemplate"), _set("spec.dataset.responseField", "tone")),
        "spec.dataset",
        "dataset.responseField must name a {placeholder} of dataset.textTemplate",
        "dataset.responseField must name a {placeholder} of dataset.textTemplate",
    ),
    BadSpec(
        "response-field-not-a-placeholder",
        _set("spec.dataset.responseField", "label"),
        "spec.dataset",
        "dataset.responseField must name a {placeholder} of dataset.textTemplate",
        "dataset.responseField must name a {placeholder} of dataset.textTemplate",
    ),
    BadSpec(
        "eight-bit-with-four-bit-options",
        _all(_set("spec.method", "qlora"), _set("spec.quantization", {"bits": 8, "quantType": "fp4"})),
        "spec.quantization",
        "apply to bits 4 only",
        "apply to bits 4 only",
    ),
    BadSpec(
        "eight-bit-with-double-quant",
        _all(_set("spec.method", "qlora"), _set("spec.quantization", {"bits": 8, "doubleQuant": True})),
        "spec.quantization",
        "apply to bits 4 only",
        "apply to bits 4 only",
    ),
    BadSpec(
        "eight-bit-with-compute-dtype",
        _all(_set("spec.method", "qlora"), _set("spec.quantization", {"bits": 8, "computeDtype": "bf16"})),
        "spec.quantization",
        "apply to bits 4 only",
        "apply to bits 4 only",
    ),
    BadSpec(
        "data-credentials-differ-from-output",
        _set("spec.dataset.credentialsSecretRef", {"name": "other-secret"}),
        "spec",
        "must equal output.credentialsSecretRef",
        "must equal output.credentialsSecretRef",
    ),
    BadSpec(
        "warmup-steps-and-ratio",
        _all(_set("spec.training.warmupSteps", 2), _set("spec.training.warmupRatio", 0.1)),
        "spec.training",
        "warmupSteps and training.warmupRatio are mutually exclusive",
        "warmupSteps and training.warmupRatio are mutually exclusive",
    ),
    BadSpec(
        "eval-ratio-and-uri",
        _set("spec.dataset.evalUri", "s3://kubetune-dev/datasets/tone/eval.jsonl"),
        "spec.dataset",
        "evalRatio and evalUri are mutually exclusive",
        "evalRatio and evalUri are mutually exclusive",
    ),
    BadSpec(
        "template-without-field",
        _set("spec.dataset.textTemplate", "no placeholders"),
        "spec.dataset.textTemplate",
        "textTemplate must reference at least one {field}",
        "textTemplate must reference at least one {field}",
    ),
    BadSpec(
        "template-with-chat",
        _set("spec.dataset.format", "chat"),
        "spec.dataset",
        "textTemplate only applies to format text",
        "textTemplate only applies to format text",
    ),
    BadSpec(
        "train-uri-http",
        _set("spec.dataset.trainUri", "https://example.com/train.jsonl"),
        "spec.dataset.trainUri",
        "must be s3://bucket/key, pvc://claim/path or an absolute path",
        "must be s3://bucket/key, pvc://claim/path or an absolute path",
    ),
    BadSpec(
        "model-uri-relative",
        _set("spec.baseModel.uri", "models/tiny"),
        "spec.baseModel.uri",
        "must be s3://bucket/key, pvc://claim/path or an absolute path",
        "must be s3://bucket/key, pvc://claim/path or an absolute path",
    ),
    BadSpec(
        "model-credentials-on-local-path",
        _all(
            _set("spec.baseModel.uri", "/models/tiny"),
            _set("spec.baseModel.credentialsSecretRef", {"name": "s3"}),
        ),
        "spec.baseModel",
        "baseModel.credentialsSecretRef only applies to an s3:// uri",
        "baseModel.credentialsSecretRef only applies to an s3:// uri",
    ),
    BadSpec(
        "output-not-s3",
        _set("spec.output.uri", "gs://bucket/runs"),
        "spec.output.uri",
        "output.uri must be an S3 URI",
        "output.uri must be an S3 URI",
    ),
    BadSpec(
        "endpoint-not-url",
        _set("spec.output.endpoint", "127.0.0.1:28333"),
        "spec.output.endpoint",
        "endpoint must be an http:// or https:// URL",
        "endpoint must be an http:// or https:// URL",
    ),
    BadSpec(
        "endpoint-with-credentials",
        _set("spec.output.endpoint", "https://AKIA:secret@s3.example.com"),
        "spec.output.endpoint",
        "without user:password",
        "without user:password",
    ),
    BadSpec(
        "lora-missing",
        _del("spec.lora"),
        "spec",
        "lora is required when method is lora or qlora",
        "lora is required when method is lora or qlora",
    ),
    BadSpec(
        "lora-with-full",
        _set("spec.method", "full"),
        "spec",
        "lora must not be set when method is full",
        "lora must not be set when method is full",
    ),
    BadSpec(
        "quantization-with-lora",
        _set("spec.quantization", {"bits": 4}),
        "spec",
        "quantization (4/8-bit base weights) is only valid with method qlora",
        "quantization (4/8-bit base weights) is only valid with method qlora",
    ),
    BadSpec(
        "early-stopping-without-eval-steps",
        _set("spec.evaluation", {"earlyStopping": {"metric": "evalLoss"}}),
        "spec",
        "evaluation.earlyStopping needs training.evalSteps",
        "evaluation.earlyStopping needs training.evalSteps",
    ),
    BadSpec(
        "early-stopping-on-unlisted-metric",
        _set("spec.evaluation", {"metrics": ["exactMatch"], "earlyStopping": {"metric": "rougeL"}}),
        "spec.evaluation",
        "earlyStopping.metric must also be listed in evaluation.metrics",
        "earlyStopping.metric must also be listed in evaluation.metrics",
    ),
    BadSpec(
        "early-stopping-on-a-task-metric-without-metrics",
        _all(
            _set("spec.training.evalSteps", 5), _set("spec.evaluation", {"earlyStopping": {"metric": "f1"}})
        ),
        "spec.evaluation",
        "earlyStopping.metric must also be listed in evaluation.metrics",
        "earlyStopping.metric must also be listed in evaluation.metrics",
    ),
    BadSpec(
        "unknown-task-metric",
        _set("spec.evaluation", {"metrics": ["bleu"]}),
        "spec.evaluation.metrics.0",
        "'exactMatch', 'f1' or 'rougeL'",
        'Unsupported value: "bleu"',
    ),
    BadSpec(
        "quantization-3-bits",
        _all(_set("spec.method", "qlora"), _set("spec.quantization", {"bits": 3})),
        "spec.quantization.bits",
        "Input should be 4 or 8",
        "Unsupported value: 3",
    ),
    BadSpec(
        "onnx-fp16-on-cpu",
        _set(
            "spec.export.targets", [{"precision": "int4"}, {"precision": "fp16", "executionProvider": "cpu"}]
        ),
        "spec.export.targets.1",
        "export target fp16 needs executionProvider cuda",
        "export target fp16 needs executionProvider cuda",
    ),
    BadSpec(
        "export-target-unknown-precision",
        _set("spec.export.targets", [{"precision": "int3"}]),
        "spec.export.targets.0.precision",
        "Input should be 'int4', 'int8', 'fp16' or 'fp32'",
        'Unsupported value: "int3"',
    ),
    BadSpec(
        "export-target-unknown-provider",
        _set("spec.export.targets", [{"precision": "int4", "executionProvider": "directml"}]),
        "spec.export.targets.0.executionProvider",
        "Input should be 'cpu' or 'cuda'",
        'Unsupported value: "directml"',
    ),
    BadSpec(
        "export-target-twice",
        _set(
            "spec.export.targets", [{"precision": "int8"}, {"precision": "int8", "executionProvider": "cpu"}]
        ),
        "spec.export",
        "export.targets must not list a precision and executionProvider pair twice",
        "export.targets must not list a precision and executionProvider pair twice",
    ),
    BadSpec(
        "gate-metric-not-computed",
        _set("spec.export.gate", [{"metric": "f1", "min": 0.9}]),
        "spec",
        "export.gate names f1 or rougeL, which are computed only when evaluation.metrics lists them",
        "export.gate names f1 or rougeL, which are computed only when evaluation.metrics lists them",
    ),
    BadSpec(
        "gate-unknown-metric",
        _set("spec.export.gate", [{"metric": "bleu", "min": 0.9}]),
        "spec.export.gate.0.metric",
        "Input should be 'exactMatch', 'f1', 'rougeL', 'parity', 'parityTokenAgreement' or "
        "'tokenizerAgreement'",
        'Unsupported value: "bleu"',
    ),
    BadSpec(
        "gate-without-targets",
        _all(_set("spec.export.targets", []), _set("spec.export.gate", [{"metric": "parity", "min": 0.9}])),
        "spec.export",
        "export.gate needs something to measure",
        "export.gate needs something to measure",
    ),
    BadSpec(
        "gate-min-above-one",
        _set("spec.export.gate", [{"metric": "parity", "min": 1.5}]),
        "spec.export.gate.0.min",
        "Input should be less than or equal to 1",
        "should be less than or equal to 1",
    ),
    BadSpec(
        "shared-base-not-s3",
        _set("spec.export.sharedBaseUri", "/mnt/bases"),
        "spec.export.sharedBaseUri",
        "export.sharedBaseUri must be an S3 URI",
        "export.sharedBaseUri must be an S3 URI",
    ),
    BadSpec(
        "onnx-adapter-with-full",
        _all(_set("spec.method", "full"), _del("spec.lora"), _set("spec.export.adapter", True)),
        "spec",
        "export.adapter needs a LoRA",
        "export.adapter needs a LoRA",
    ),
    BadSpec(
        "onnx-adapter-with-dora",
        _all(_set("spec.lora.useDora", True), _set("spec.export.adapter", True)),
        "spec",
        "export.adapter cannot carry DoRA magnitudes",
        "export.adapter cannot carry DoRA magnitudes",
    ),
    BadSpec(
        "fp16-training-on-cpu",
        _set("spec.training.precision", "fp16"),
        "spec",
        "training.precision fp16 needs GPUs",
        "training.precision fp16 needs GPUs",
    ),
    BadSpec(
        "negative-gpus",
        _set("spec.resources.gpusPerNode", -1),
        "spec.resources.gpusPerNode",
        "greater than or equal to 0",
        "spec.resources.gpusPerNode in body should be greater than or equal to 0",
    ),
    BadSpec(
        "bad-quantity",
        _set("spec.resources.memory", "two gigs"),
        "spec.resources.memory",
        "is not a Kubernetes quantity",
        "spec.resources.memory in body should match",
    ),
    BadSpec(
        "exists-toleration-with-value",
        _set("spec.resources.tolerations", [{"key": "gpu", "operator": "Exists", "value": "yes"}]),
        "spec.resources.tolerations.0",
        "a toleration with operator Exists must not have a value",
        "a toleration with operator Exists must not have a value",
    ),
    BadSpec(
        "typo-in-spec",
        _set("spec.trainig", {"maxSteps": 3}),
        "spec.trainig",
        "Extra inputs are not permitted",
        'unknown field "spec.trainig"',
    ),
    BadSpec(
        "name-too-long",
        _set("metadata.name", "a" * 41),
        "",
        "metadata.name must be at most 40 characters",
        "metadata.name must be at most 40 characters",
    ),
]

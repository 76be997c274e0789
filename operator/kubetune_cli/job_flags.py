"""`kubetune finetune`'s flags as a FineTuneJob: pure, so a flag maps to exactly one spec field and the
API's own models check the result before anything is sent."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from kubetune_api import API_VERSION, KIND, FineTuneJob, describe_errors

# The flag that sets each spec field, named beside the API's message when the field is refused.
FLAG_OF_FIELD = {
    "baseModel.uri": "-m/--model",
    "dataset.trainUri": "-d/--data",
    "dataset.evalUri": "--eval-data",
    "dataset.evalRatio": "--eval-ratio",
    "dataset.textTemplate": "--text-template",
    "dataset.format": "--format",
    "dataset.maxSamples": "--max-samples",
    "output.uri": "--output",
    "output.endpoint": "--endpoint",
    "training.maxSteps": "--max-steps",
    "training.epochs": "--epochs",
    "training.learningRate": "--learning-rate",
    "training.batchSize": "--batch-size",
    "training.gradientAccumulationSteps": "--gradient-accumulation-steps",
    "training.maxSeqLength": "--max-seq-len",
    "training.precision": "--precision",
    "lora.r": "--lora-r",
    "lora.alpha": "--lora-alpha",
    "lora.dropout": "--lora-dropout",
    "resources.gpusPerNode": "--gpus",
    "resources.nodes": "--nodes",
    "resources.cpu": "--cpu",
    "resources.memory": "--memory",
    "queueName": "--queue",
    "method": "--method",
}

# Olive's --torch_dtype names, and ours.
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


class FlagError(ValueError):
    """The flags do not make a valid FineTuneJob; the message names each problem."""


@dataclass(frozen=True)
class FinetuneFlags:
    """Every `kubetune finetune` flag; None means unset (the API's default applies)."""

    model: str
    data: str
    output: str
    name: str | None = None
    method: str = "lora"
    eval_data: str | None = None
    eval_ratio: float | None = None
    text_template: str | None = None
    data_format: str | None = None
    max_samples: int | None = None
    max_steps: int | None = None
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    max_seq_length: int | None = None
    precision: str | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: tuple[str, ...] = ()
    gpus: int | None = None
    nodes: int | None = None
    cpu: str | None = None
    memory: str | None = None
    queue: str | None = None
    export_targets: tuple[str, ...] = ()
    no_export: bool = False
    adapter: bool = False
    endpoint: str | None = None
    region: str | None = None
    force_path_style: bool = False
    credentials_secret: str | None = None
    dry_run: bool = False
    settings: tuple[str, ...] = field(default_factory=tuple)


def finetunejob(flags: FinetuneFlags) -> dict[str, Any]:
    """The FineTuneJob the flags describe (only what was set: the API server fills in the defaults),
    after the API models accepted it."""
    spec: dict[str, Any] = {
        "baseModel": {"uri": flags.model},
        "dataset": _dataset(flags),
        "method": flags.method,
        "output": _unset_dropped(
            {
                "uri": flags.output,
                "endpoint": flags.endpoint,
                "region": flags.region,
                "forcePathStyle": flags.force_path_style or None,
                "credentialsSecretRef": {"name": flags.credentials_secret}
                if flags.credentials_secret
                else None,
            }
        ),
    }
    if flags.method in ("lora", "qlora"):
        spec["lora"] = _unset_dropped(
            {
                "r": flags.lora_r,
                "alpha": flags.lora_alpha,
                "dropout": flags.lora_dropout,
                "targetModules": list(flags.target_modules) or None,
            }
        )
    elif (
        any(v is not None for v in (flags.lora_r, flags.lora_alpha, flags.lora_dropout))
        or flags.target_modules
    ):
        raise FlagError(
            "--lora-r, --lora-alpha, --lora-dropout and --target-modules need --method lora or qlora"
        )
    training = _training(flags)
    if training:
        spec["training"] = training
    resources = _unset_dropped(
        {"gpusPerNode": flags.gpus, "nodes": flags.nodes, "cpu": flags.cpu, "memory": flags.memory}
    )
    if resources:
        spec["resources"] = resources
    export = _export(flags)
    if export:
        spec["export"] = export
    if flags.queue:
        spec["queueName"] = flags.queue
    if flags.dry_run:
        spec["dryRun"] = True
    for setting in flags.settings:
        _set(spec, setting)
    metadata = {"name": flags.name} if flags.name else {"generateName": "finetune-"}
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    check(body)
    return body


def check(body: dict[str, Any]) -> None:
    """The API models' verdict on a FineTuneJob body, as a FlagError naming every problem."""
    try:
        FineTuneJob.model_validate({**body, "metadata": {"name": body["metadata"].get("name")}})
    except ValidationError as e:
        raise FlagError(_with_flags(describe_errors(e))) from e


def _with_flags(message: str) -> str:
    """`spec.training.learningRate: ...` -> `spec.training.learningRate (--learning-rate): ...`."""
    problems = []
    for problem in message.split("; "):
        where, sep, text = problem.partition(": ")
        flag = FLAG_OF_FIELD.get(where.removeprefix("spec."))
        problems.append(f"{where} ({flag}){sep}{text}" if flag and sep else problem)
    return "; ".join(problems)


def _dataset(flags: FinetuneFlags) -> dict[str, Any]:
    return _unset_dropped(
        {
            "trainUri": flags.data,
            "evalUri": flags.eval_data,
            "evalRatio": flags.eval_ratio,
            "format": flags.data_format,
            "textTemplate": unescape(flags.text_template) if flags.text_template else None,
            "maxSamples": flags.max_samples,
        }
    )


def unescape(text: str) -> str:
    """A shell passes a typed \\n as two characters; a template means a newline by it (and \\t a tab;
    a doubled backslash stays one backslash)."""
    escapes = {"n": "\n", "t": "\t", "\\": "\\"}
    return re.sub(r"\\([\\nt])", lambda m: escapes[m.group(1)], text)


def _training(flags: FinetuneFlags) -> dict[str, Any]:
    precision = PRECISIONS.get(flags.precision or "", flags.precision)
    return _unset_dropped(
        {
            "maxSteps": flags.max_steps,
            "epochs": flags.epochs,
            "learningRate": flags.learning_rate,
            "batchSize": flags.batch_size,
            "gradientAccumulationSteps": flags.gradient_accumulation_steps,
            "maxSeqLength": flags.max_seq_length,
            "precision": precision,
        }
    )


def _export(flags: FinetuneFlags) -> dict[str, Any]:
    if flags.no_export:
        if flags.export_targets or flags.adapter:
            raise FlagError("--no-export cannot be combined with --export-target or --adapter")
        return {"enabled": False}
    export: dict[str, Any] = {}
    if flags.export_targets:
        export["targets"] = [_target(t) for t in flags.export_targets]
    if flags.adapter:
        export["adapter"] = True
    return export


def _target(text: str) -> dict[str, str]:
    """`int4` or `int4:cpu` (precision[:executionProvider])."""
    precision, _, provider = text.partition(":")
    if not precision:
        raise FlagError(f"--export-target {text!r}: expected PRECISION[:PROVIDER], e.g. int4:cpu")
    return {"precision": precision, **({"executionProvider": provider} if provider else {})}


def _set(spec: dict[str, Any], setting: str) -> None:
    """`--set training.warmupRatio=0.1`: any spec field by its API path; the value is read as YAML."""
    path, sep, raw = setting.partition("=")
    if not sep or not path:
        raise FlagError(f"--set {setting!r}: expected FIELD.PATH=VALUE, e.g. training.warmupRatio=0.1")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise FlagError(f"--set {setting!r}: the value is not valid YAML: {e}") from e
    node = spec
    keys = path.removeprefix("spec.").split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise FlagError(f"--set {setting!r}: {key} is not an object")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def _unset_dropped(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}

"""FineTuneJob spec -> the trainer's config document (the contract with trainer/)."""

from __future__ import annotations

from typing import Any

from kubetune_api import EvaluationSpec, FineTuneJob, LoraSpec, Method, QuantizationSpec
from kubetune_trainer.config import TrainerConfig, parse_config

TEXT_FIELD_TEMPLATE = "{text}"


class UnsupportedSpec(ValueError):
    """The spec is valid API but asks for something this trainer version cannot do."""


def trainer_config(ftj: FineTuneJob) -> TrainerConfig:
    spec = ftj.spec
    unsupported = {
        "export.onnx.enabled: false": not spec.export.onnx.enabled and spec.export.enabled,
        "export.mergedModel: false": not spec.export.merged_model,
    }
    for field, asked in unsupported.items():
        if asked:
            raise UnsupportedSpec(f"{field} is not supported by this trainer version")
    for where, source in (("baseModel", spec.base_model), ("dataset", spec.dataset)):
        ref = source.credentials_secret_ref
        if ref is not None and ref != spec.output.credentials_secret_ref:
            # The trainer reads every S3 object with one set of credentials: output's.
            raise UnsupportedSpec(
                f"{where}.credentialsSecretRef differs from output.credentialsSecretRef; this trainer "
                "version reads all S3 objects with output's credentials"
            )
    training = spec.training
    precision = training.precision
    if precision == "auto":
        precision = "bf16" if spec.resources.gpus_per_node > 0 else "fp32"
    onnx = spec.export.onnx
    doc: dict[str, Any] = {
        "name": ftj.metadata.name,
        "namespace": ftj.metadata.namespace,
        "runId": ftj.spec_hash(),
        "baseModel": {"uri": spec.base_model.uri, "revision": spec.base_model.revision},
        "dataset": {
            "trainUri": spec.dataset.train_uri,
            "evalUri": spec.dataset.eval_uri,
            "format": spec.dataset.format,
            # As the API documents: format text without a template trains on each record's 'text' field.
            "textTemplate": spec.dataset.text_template
            or (TEXT_FIELD_TEMPLATE if spec.dataset.format == "text" else None),
            "maxSamples": spec.dataset.max_samples,
            "seed": spec.dataset.seed,
            **({"evalRatio": spec.dataset.eval_ratio} if spec.dataset.eval_ratio is not None else {}),
        },
        "method": spec.method.value,
        "lora": _lora(spec.lora),
        "quantization": _quantization(spec.quantization) if spec.method == Method.QLORA else None,
        "training": {
            "maxSteps": training.max_steps,
            "epochs": training.epochs,
            "learningRate": training.learning_rate,
            "lrScheduler": training.lr_scheduler,
            "warmupSteps": training.warmup_steps or 0,
            "warmupRatio": training.warmup_ratio or 0.0,
            "batchSize": training.batch_size,
            "gradientAccumulationSteps": training.gradient_accumulation_steps,
            "gradientCheckpointing": training.gradient_checkpointing,
            "precision": precision,
            "maxSeqLength": training.max_seq_length,
            # Left out of the trainer config's JSON when false, so spec hashes stay as they were.
            "packing": training.packing,
            "seed": training.seed,
            "loggingSteps": training.logging_steps,
            "evalSteps": training.eval_steps,
            "saveSteps": training.save_steps,
        },
        "evaluation": _evaluation(spec.evaluation),
        # Each spec revision writes under its own run id: a deterministic, never-overwritten path.
        "output": {"uri": f"{spec.output.uri.rstrip('/')}/{ftj.spec_hash()}"},
        "export": {
            "precision": onnx.precision,
            "executionProvider": onnx.execution_provider,
            "int4": {
                "algo": onnx.int4.algorithm,
                "mixedPrecision": _mixed_precision(onnx.int4.last_matmul, onnx.int4.mixed_layers),
                "blockSize": onnx.int4.block_size,
                "accuracyLevel": onnx.int4.accuracy_level,
            },
            "onnxAdapter": onnx.adapter,
            "parityPrompts": spec.export.parity_prompts,
        },
    }
    return parse_config(_drop_none(doc))


def _lora(lora: LoraSpec | None) -> dict[str, Any] | None:
    # The CRD requires lora for lora and qlora and forbids it for full.
    if lora is None:
        return None
    return {
        "r": lora.r,
        "alpha": lora.alpha,
        "dropout": lora.dropout,
        "targetModules": lora.target_modules or None,
        "modulesToSave": lora.modules_to_save or None,
        "useDora": lora.use_dora,
    }


def _evaluation(evaluation: EvaluationSpec | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    stopping = evaluation.early_stopping
    return {
        "metrics": list(evaluation.metrics),
        "samples": evaluation.samples,
        "maxNewTokens": evaluation.max_new_tokens,
        "earlyStopping": None
        if stopping is None
        else {"metric": stopping.metric, "patience": stopping.patience, "minDelta": stopping.min_delta},
    }


def _quantization(quantization: QuantizationSpec | None) -> dict[str, Any]:
    """qlora's base quantization; unset means 4-bit nf4 with double quantization (the API's defaults)."""
    quantization = quantization or QuantizationSpec()
    if quantization.bits == 8:
        # quantType, doubleQuant and computeDtype describe 4-bit weights. The API server fills in their
        # defaults, so only a changed value is something the user asked for.
        defaults = QuantizationSpec()
        for name in ("quant_type", "double_quant", "compute_dtype"):
            if getattr(quantization, name) != getattr(defaults, name):
                raise UnsupportedSpec(f"quantization.{_camel(name)} applies to bits 4 only; remove it")
        return {"bits": 8}
    return {
        "bits": 4,
        "quantType": quantization.quant_type,
        "doubleQuant": quantization.double_quant,
        "computeDtype": quantization.compute_dtype,
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _mixed_precision(last_matmul: str, mixed_layers: str) -> str:
    parts = [f"last_matmul:{last_matmul}"] if last_matmul == "int8" else []
    parts += [f"mixed_layers:{mixed_layers}"] if mixed_layers == "int8" else []
    return ",".join(parts)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value

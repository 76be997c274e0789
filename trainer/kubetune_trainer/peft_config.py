"""Converters from the typed config to library objects (peft LoraConfig, transformers TrainingArguments).

The bitsandbytes config for qlora is in quantization.py."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_api.v1alpha1 import EvaluationSpec, FineTuneJobSpec, LoraSpec, TrainingSpec
from kubetune_trainer.errors import config_error
from kubetune_trainer.models import discover_target_modules, linear_module_names

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import TrainingArguments


def to_lora_config(spec: LoraSpec, model: Any) -> LoraConfig:
    from peft import LoraConfig, TaskType

    targets = spec.target_modules or discover_target_modules(model)
    missing = sorted(set(targets) - set(linear_module_names(model)))
    if missing:
        raise config_error(
            f"lora.targetModules {missing} are not Linear layers of this model; "
            f"it has {sorted(linear_module_names(model))}"
        )
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=sorted(targets),
        modules_to_save=spec.modules_to_save,
        bias="none",
        use_dora=spec.use_dora,
    )


def check_precision(precision: str, cuda_available: bool) -> None:
    if precision == "fp16" and not cuda_available:
        raise config_error("training.precision fp16 needs a GPU; use fp32 or bf16 on CPU")


def checkpoint_arguments(spec: TrainingSpec, evaluation: EvaluationSpec | None) -> dict[str, Any]:
    """When the Trainer saves checkpoints, and (early stopping) how it picks the best one."""
    from kubetune_trainer.evaluation import TRAINER_KEYS

    stopping = evaluation.early_stopping if evaluation else None
    common = {
        # Older ones are in S3 if needed; the pod's disk keeps only the newest (and the best).
        "save_total_limit": 1,
        # Every pod keeps its own copy, so every pod can load the best one at the end.
        "save_on_each_node": True,
        # A resumed run keeps early stopping's patience count.
        "restore_callback_states_from_checkpoint": True,
    }
    if stopping is None:
        # Without saveSteps a checkpoint is still written on SIGTERM (checkpoints.PreemptionWatch).
        return {
            **common,
            "save_strategy": "steps" if spec.save_steps else "no",
            "save_steps": spec.save_steps,
        }
    return {
        **common,
        # Saves follow the evaluations: the best evaluated step is always a saved one.
        "save_strategy": "steps",
        "save_steps": spec.eval_steps,
        "load_best_model_at_end": True,
        "metric_for_best_model": f"eval_{TRAINER_KEYS[stopping.metric]}",
        "greater_is_better": stopping.greater_is_better,
    }


def to_training_arguments(job: FineTuneJobSpec, output_dir: Path, has_eval: bool) -> TrainingArguments:
    import torch
    from transformers import TrainingArguments

    spec, evaluation, precision = job.training, job.evaluation, job.training_precision
    check_precision(precision, torch.cuda.is_available())
    evaluate_periodically = has_eval and spec.eval_steps is not None
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    checkpointing: dict[str, Any] = {
        name: spec.gradient_checkpointing
        for name in (
            "activation_checkpointing"
            if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing",
        )
    }
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=spec.max_steps or -1,
        # Ignored when maxSteps sets the length.
        num_train_epochs=spec.length_epochs or 1.0,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        # transformers reads a warmup below 1 as a fraction of the total steps.
        warmup_steps=spec.warmup_ratio if spec.warmup_ratio else (spec.warmup_steps or 0),
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        **checkpointing,
        # Mixed precision keeps fp32 master weights, so the LoRA optimizer state stays accurate.
        bf16=precision == "bf16",
        # bf16 autocast on the CPU is only allowed when the CPU is asked for explicitly.
        use_cpu=not torch.cuda.is_available(),
        fp16=precision == "fp16",
        seed=spec.seed,
        data_seed=spec.seed,
        logging_steps=spec.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate_periodically else "no",
        eval_steps=spec.eval_steps if evaluate_periodically else None,
        **checkpoint_arguments(spec, evaluation),
        # TensorBoard event files, written where train.py's TENSORBOARD_LOGGING_DIR points.
        report_to=["tensorboard"],
        disable_tqdm=True,
        # Our collator builds the batches from plain token lists, so no column is unused.
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Packed batches have no attention mask; train.PackedTrainer counts their real tokens instead.
        include_num_input_tokens_seen="no" if spec.packing else "non_padding",
        ddp_find_unused_parameters=False,
    )

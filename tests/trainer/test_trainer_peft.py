from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_api import LoraSpec
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.peft_config import check_precision, to_lora_config, to_training_arguments


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path):
    import torch

    from kubetune_trainer.models import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_model_dir, torch.float32)[0]


def test_target_modules_are_discovered_as_attention_projections(tiny_model) -> None:
    from kubetune_trainer.models import discover_target_modules, linear_module_names

    assert discover_target_modules(tiny_model) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert "lm_head" not in linear_module_names(tiny_model)
    assert {"gate_proj", "up_proj", "down_proj"} <= set(linear_module_names(tiny_model))


def test_lora_converter(tiny_model) -> None:
    config = to_lora_config(
        LoraSpec(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "down_proj"]), tiny_model
    )
    assert config.r == 4 and config.lora_alpha == 8 and config.lora_dropout == 0.0
    assert set(config.target_modules) == {"q_proj", "down_proj"}
    assert config.task_type == "CAUSAL_LM"


def test_lora_converter_rejects_unknown_modules(tiny_model) -> None:
    with pytest.raises(TrainerError, match="not_a_layer") as info:
        to_lora_config(LoraSpec(target_modules=["not_a_layer"]), tiny_model)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG


def test_training_arguments_converter(tmp_path: Path, make_input) -> None:
    training = {"maxSteps": 7, "learningRate": 1e-3, "warmupRatio": 0.1, "batchSize": 2, "evalSteps": 3}
    args = to_training_arguments(make_input("/m", "/o", training=training).spec, tmp_path, has_eval=True)
    assert args.max_steps == 7 and args.learning_rate == 1e-3 and args.warmup_steps == 0.1
    assert args.per_device_train_batch_size == 2
    assert args.eval_strategy == "steps" and args.eval_steps == 3
    # The API's default: a checkpoint every 100 steps.
    assert args.save_strategy == "steps" and args.save_steps == 100
    assert not args.bf16 and args.logging_steps == 1
    assert args.include_num_input_tokens_seen == "non_padding"


def test_training_arguments_epochs_without_eval(tmp_path: Path, make_input) -> None:
    spec = make_input("/m", "/o", training={"epochs": 2, "precision": "bf16"}).spec
    args = to_training_arguments(spec, tmp_path, has_eval=False)
    assert args.max_steps == -1 and args.num_train_epochs == 2 and args.bf16
    assert args.eval_strategy == "no"


def test_without_a_length_training_runs_one_epoch(tmp_path: Path, make_input) -> None:
    args = to_training_arguments(make_input("/m", "/o", training={}).spec, tmp_path, has_eval=False)
    assert args.max_steps == -1 and args.num_train_epochs == 1.0


@pytest.mark.parametrize(("gpus", "bf16"), [(0, False), (1, True)])
def test_auto_precision_is_bf16_on_gpus_and_fp32_on_the_cpu(
    tmp_path: Path, make_input, gpus: int, bf16: bool
) -> None:
    spec = make_input("/m", "/o", training={"precision": "auto"}, resources={"gpusPerNode": gpus}).spec
    args = to_training_arguments(spec, tmp_path, has_eval=False)
    assert args.bf16 is bf16 and not args.fp16


def test_fp16_needs_a_gpu() -> None:
    with pytest.raises(TrainerError, match="fp16"):
        check_precision("fp16", cuda_available=False)
    check_precision("fp16", cuda_available=True)

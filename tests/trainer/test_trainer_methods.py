"""Methods lora, qlora (bitsandbytes 4/8-bit base) and full, and DoRA: config, converters, preparation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.config import LoraSpec, QuantizationSpec, TrainerConfig, parse_config
from kubetune_trainer.errors import ExitCode, TrainerError


def minimal(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "tone",
        "runId": "abc",
        "baseModel": {"uri": "s3://models/base/"},
        "dataset": {"trainUri": "s3://data/train.jsonl", "textTemplate": "Phrase: {phrase}\nTone: {tone}"},
        "output": {"uri": "s3://runs/tone/abc"},
        **overrides,
    }


def invalid(data: dict[str, Any]) -> str:
    with pytest.raises(TrainerError) as info:
        parse_config(data)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG
    return info.value.message


# --- config ---------------------------------------------------------------------------------------


def test_qlora_defaults_to_4bit_nf4_double_quant() -> None:
    cfg = parse_config(minimal(method="qlora"))
    assert cfg.quantization is None and cfg.uses_adapter
    quant = cfg.effective_quantization
    assert quant is not None and quant.bits == 4
    assert (quant.four_bit_type, quant.four_bit_double_quant, quant.four_bit_compute_dtype) == (
        "nf4",
        True,
        "bf16",
    )


def test_lora_and_full_have_no_quantization() -> None:
    assert parse_config(minimal()).effective_quantization is None
    full = parse_config(minimal(method="full"))
    assert full.effective_quantization is None and not full.uses_adapter


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (minimal(quantization={"bits": 4}), "quantization is only valid with method qlora, not lora"),
        (minimal(method="full", quantization={}), "quantization is only valid with method qlora, not full"),
        (minimal(method="full", lora={"r": 8}), "lora must not be set with method full"),
        (minimal(method="full", export={"onnxAdapter": True}), "export.onnxAdapter needs a LoRA"),
        (
            minimal(lora={"useDora": True}, export={"onnxAdapter": True}),
            "export.onnxAdapter cannot carry DoRA",
        ),
        (minimal(method="qlora", quantization={"bits": 3}), "quantization.bits"),
        (minimal(method="qlora", quantization={"quantType": "int4"}), "quantization.quantType"),
        (minimal(method="qlora", quantization={"computeDtype": "fp8"}), "quantization.computeDtype"),
        (
            minimal(method="qlora", quantization={"bits": 8, "quantType": "nf4"}),
            "quantization.quantType applies to bits 4 only",
        ),
        (
            minimal(method="qlora", quantization={"bits": 8, "doubleQuant": True}),
            "quantization.doubleQuant applies to bits 4 only",
        ),
        (
            minimal(method="qlora", quantization={"bits": 8, "computeDtype": "bf16"}),
            "quantization.computeDtype applies to bits 4 only",
        ),
    ],
    ids=[
        "quant-with-lora",
        "quant-with-full",
        "lora-with-full",
        "onnx-adapter-with-full",
        "onnx-adapter-with-dora",
        "bits-3",
        "quant-type",
        "compute-dtype",
        "8bit-quant-type",
        "8bit-double-quant",
        "8bit-compute-dtype",
    ],
)
def test_invalid_method_combinations_name_the_field(data: dict[str, Any], expected: str) -> None:
    assert expected in invalid(data)


@pytest.mark.parametrize(
    "data",
    [
        minimal(),
        minimal(lora={"useDora": True}),
        minimal(method="qlora"),
        minimal(method="qlora", quantization={"bits": 8}),
        minimal(
            method="qlora", quantization={"quantType": "fp4", "doubleQuant": False, "computeDtype": "fp32"}
        ),
        minimal(method="full"),
    ],
    ids=["lora", "dora", "qlora", "qlora-8bit", "qlora-fp4", "full"],
)
def test_dumps_parse_back(data: dict[str, Any]) -> None:
    cfg = parse_config(data)
    for dumped in (
        cfg.model_dump(mode="json", by_alias=True),
        cfg.model_dump(mode="json", exclude_none=True),
    ):
        assert parse_config(dumped) == cfg


def test_full_dumps_carry_no_lora_section() -> None:
    assert "lora" not in parse_config(minimal(method="full")).model_dump(by_alias=True)


def test_a_plain_lora_config_dumps_as_before_the_new_fields() -> None:
    # The operator's ConfigMap and the manifest's spec hash of an existing LoRA spec stay unchanged.
    dumped = parse_config(minimal()).model_dump(mode="json", by_alias=True)
    assert "quantization" not in dumped and "useDora" not in dumped["lora"]
    assert parse_config(minimal(lora={"useDora": True})).model_dump(by_alias=True)["lora"]["useDora"]


# --- converters -----------------------------------------------------------------------------------


def test_bnb_config_4bit_defaults() -> None:
    import torch

    from kubetune_trainer.quantization import to_bnb_config

    config = to_bnb_config(QuantizationSpec())
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_bnb_config_4bit_options_and_8bit() -> None:
    import torch

    from kubetune_trainer.quantization import to_bnb_config

    fp4 = to_bnb_config(QuantizationSpec(quant_type="fp4", double_quant=False, compute_dtype="fp32"))
    assert fp4.bnb_4bit_quant_type == "fp4" and not fp4.bnb_4bit_use_double_quant
    assert fp4.bnb_4bit_compute_dtype == torch.float32
    eight = to_bnb_config(QuantizationSpec(bits=8))
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_fp16_compute_needs_a_gpu() -> None:
    from kubetune_trainer.quantization import check_compute_dtype

    with pytest.raises(TrainerError, match=r"quantization\.computeDtype fp16 needs a GPU") as info:
        check_compute_dtype(QuantizationSpec(compute_dtype="fp16"), cuda_available=False)
    assert info.value.exit_code == ExitCode.INVALID_CONFIG
    check_compute_dtype(QuantizationSpec(compute_dtype="fp16"), cuda_available=True)


@pytest.fixture(scope="module")
def fp32_model(tiny_model_dir: Path) -> Any:
    from kubetune_trainer.models import load_for_training

    return load_for_training(tiny_model_dir, None)[0]


def test_lora_converter_passes_dora(fp32_model: Any) -> None:
    from kubetune_trainer.peft_config import to_lora_config

    assert to_lora_config(LoraSpec(use_dora=True), fp32_model).use_dora
    assert not to_lora_config(LoraSpec(), fp32_model).use_dora


def _config(method: str, **overrides: Any) -> TrainerConfig:
    return parse_config(minimal(method=method, **overrides))


def test_qlora_4bit_loads_quantized_and_guarded(tiny_model_dir: Path) -> None:
    import bitsandbytes as bnb

    from kubetune_trainer.models import load_for_training

    model, _ = load_for_training(tiny_model_dir, QuantizationSpec())
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 blocks
    assert not any(layer.support_avx512bf16_for_cpu for layer in layers)
    assert model.get_output_embeddings().weight.dtype.is_floating_point  # the LM head stays fp32


def test_guarded_layers_keep_their_trainable_layout_through_inference(tiny_model_dir: Path) -> None:
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.quantization import keep_4bit_layers_trainable, to_bnb_config

    def inference_pass(guard: bool) -> tuple[Any, list[bool]]:
        config = to_bnb_config(QuantizationSpec())
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=config).eval()
        if guard:
            keep_4bit_layers_trainable(model)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3, 4, 5]]))  # as a generation check before training does
        layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        return model, [getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers]

    assert not any(inference_pass(guard=True)[1])
    unguarded, packed = inference_pass(guard=False)
    if not any(packed):
        pytest.skip("this CPU has no avx512_bf16: bitsandbytes never repacks here")
    with pytest.raises(TrainerError, match="already repacked") as info:
        keep_4bit_layers_trainable(unguarded)
    assert info.value.exit_code == ExitCode.MODEL


@pytest.mark.parametrize(
    ("method", "overrides"),
    [
        ("lora", {}),
        ("lora", {"lora": {"useDora": True}}),
        ("qlora", {}),
        ("qlora", {"quantization": {"bits": 8}}),
        ("full", {}),
    ],
    ids=["lora", "dora", "qlora-4bit", "qlora-8bit", "full"],
)
def test_prepare_model_trains_what_the_method_says(
    tiny_model_dir: Path, method: str, overrides: dict[str, Any]
) -> None:
    from kubetune_trainer.models import load_for_training
    from kubetune_trainer.train import parameter_counts, prepare_model

    cfg = _config(method, **overrides)
    model = prepare_model(cfg, load_for_training(tiny_model_dir, cfg.effective_quantization)[0])
    trainable, total = parameter_counts(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if method == "full":
        assert trainable == total and not hasattr(model, "peft_config")
        assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())
        return
    assert 0 < trainable < total / 4
    assert names and all(".lora_" in name for name in names)
    assert any("lora_magnitude_vector" in name for name in names) == cfg.lora.use_dora


# --- export bookkeeping ---------------------------------------------------------------------------


def test_full_model_is_reported_as_the_merged_artifact() -> None:
    from kubetune_trainer.export import ARTIFACT_KINDS as EXPORT_KINDS
    from kubetune_trainer.train import ARTIFACT_KINDS, trained_dir_name

    assert trained_dir_name(_config("full")) == "model" and ARTIFACT_KINDS["model"] == "merged"
    assert EXPORT_KINDS["model"] == "merged"
    for method in ("lora", "qlora"):
        assert trained_dir_name(_config(method)) == "adapter"


def test_manifest_lora_section(tmp_path: Path) -> None:
    from kubetune_trainer.export import lora_manifest, quantization_manifest

    assert lora_manifest(tmp_path) is None  # a full fine-tune's model/
    (tmp_path / "adapter_config.json").write_text(
        json.dumps(
            {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["v", "q"], "use_dora": True}
        )
    )
    section = lora_manifest(tmp_path)
    assert section is not None and section["useDora"] and section["targetModules"] == ["q", "v"]
    assert quantization_manifest(QuantizationSpec(bits=8)) == {"bits": 8}
    assert quantization_manifest(QuantizationSpec()) == {
        "bits": 4,
        "quantType": "nf4",
        "doubleQuant": True,
        "computeDtype": "bf16",
    }

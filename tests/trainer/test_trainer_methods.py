"""Methods lora, qlora (bitsandbytes 4/8-bit base) and full, and DoRA: what each trains with, the
converters, model preparation and the export's bookkeeping. Invalid combinations are API rules: see
tests/api/api_cases.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import FineTuneJobSpec, LoraSpec, QuantizationSpec, RunLayout
from kubetune_api.layout import ARTIFACT_KINDS
from kubetune_trainer.errors import ExitCode, TrainerError


def spec_of(method: str, **overrides: Any) -> FineTuneJobSpec:
    """A spec of `method`: a lora section (the defaults) for lora and qlora, none for full."""
    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": "s3://models/base/"},
            "dataset": {
                "trainUri": "s3://data/train.jsonl",
                "textTemplate": "Phrase: {phrase}\nTone: {tone}",
            },
            "method": method,
            **({} if method == "full" else {"lora": {}}),
            "output": {"uri": "s3://runs/tone"},
            **overrides,
        }
    )


# --- what each method trains with ------------------------------------------------------------------


def test_qlora_defaults_to_4bit_nf4_double_quant() -> None:
    spec = spec_of("qlora")
    assert spec.quantization is None and spec.uses_adapter
    quant = spec.effective_quantization
    assert quant is not None and quant.bits == 4
    assert (quant.four_bit_type, quant.four_bit_double_quant, quant.four_bit_compute_dtype) == (
        "nf4",
        True,
        "bf16",
    )


def test_lora_and_full_have_no_quantization() -> None:
    assert spec_of("lora").effective_quantization is None
    full = spec_of("full")
    assert full.effective_quantization is None and not full.uses_adapter


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

    spec = spec_of(method, **overrides)
    model = prepare_model(spec, load_for_training(tiny_model_dir, spec.effective_quantization)[0])
    trainable, total = parameter_counts(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if method == "full":
        assert trainable == total and not hasattr(model, "peft_config")
        assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())
        return
    assert 0 < trainable < total / 4
    assert names and all(".lora_" in name for name in names)
    assert spec.lora is not None
    assert any("lora_magnitude_vector" in name for name in names) == spec.lora.use_dora


# --- export bookkeeping ---------------------------------------------------------------------------


def test_full_model_is_reported_as_the_merged_artifact() -> None:
    layout = RunLayout("s3://runs/tone/abc")
    assert layout.trained_dir(spec_of("full").uses_adapter) == "model" and ARTIFACT_KINDS["model"] == "merged"
    for method in ("lora", "qlora"):
        assert layout.trained_dir(spec_of(method).uses_adapter) == "adapter"


def test_manifest_lora_section(tmp_path: Path) -> None:
    from kubetune_trainer.manifest import lora_manifest, quantization_manifest

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

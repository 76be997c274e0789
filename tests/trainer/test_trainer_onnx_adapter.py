from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kubetune_trainer.errors import TrainerError
from kubetune_trainer.onnx_adapter import (
    lora_nodes_to_exclude,
    lora_scale,
    onnx_node_name,
    onnx_weight_name,
    peft_to_onnx_params,
)


def test_builder_names() -> None:
    assert (
        onnx_weight_name(3, "self_attn", "q_proj", "A") == "model.layers.3.attn.q_proj.lora_A.MatMul.weight"
    )
    assert onnx_node_name(0, "mlp", "down_proj", "B") == "/model/layers.0/mlp/down_proj/lora_B/MatMul"


def test_scale() -> None:
    assert lora_scale({"r": 16, "lora_alpha": 32}) == 2.0
    assert lora_scale({"r": 16, "lora_alpha": 32, "use_rslora": True}) == 8.0


def write_adapter(folder: Path, tensors: dict[str, np.ndarray], r: int = 2, alpha: int = 4) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha}))
    return folder


def test_peft_weights_are_transposed_and_b_is_scaled(tmp_path: Path) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)  # [r, in]
    b = np.ones((4, 2), dtype=np.float32)  # [out, r]
    prefix = "base_model.model.model.layers.1.self_attn.v_proj"
    folder = write_adapter(tmp_path, {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b})
    params = peft_to_onnx_params(folder)
    np.testing.assert_array_equal(params["model.layers.1.attn.v_proj.lora_A.MatMul.weight"], a.T)
    np.testing.assert_array_equal(params["model.layers.1.attn.v_proj.lora_B.MatMul.weight"], b.T * 2.0)
    assert lora_nodes_to_exclude(folder) == [
        "/model/layers.1/attn/v_proj/lora_A/MatMul",
        "/model/layers.1/attn/v_proj/lora_B/MatMul",
    ]


def test_unmappable_weights_are_an_export_error(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path, {"base_model.model.lm_head.lora_A.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(TrainerError, match="cannot map adapter weight"):
        peft_to_onnx_params(folder)

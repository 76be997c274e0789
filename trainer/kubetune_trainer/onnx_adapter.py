"""Swappable LoRA adapters for ONNX Runtime GenAI (multi-LoRA serving).

The model builder, given `adapter_path`, adds a LoRA branch (MatMul A → MatMul B → Add) beside each
target projection, with the weights baked in as initializers. We turn those initializers into
graph inputs whose default is zero (so the model alone is the base model), and write the PEFT
weights under the same names into an `.onnx_adapter` file that `og.Adapters` loads and switches.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_trainer.errors import export_error

if TYPE_CHECKING:
    import numpy as np

# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight → layer 3, attn, q_proj, A
_PEFT_KEY = re.compile(r"(?:.*\.)?layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")
# The builder names the attention block "attn" whatever the Hugging Face module is called.
_BLOCKS = {"self_attn": "attn", "mlp": "mlp"}


def onnx_weight_name(layer: int, block: str, module: str, which: str) -> str:
    """The builder's initializer (and our graph input) name for one LoRA matrix."""
    return f"model.layers.{layer}.{_BLOCKS[block]}.{module}.lora_{which}.MatMul.weight"


def onnx_node_name(layer: int, block: str, module: str, which: str) -> str:
    return f"/model/layers.{layer}/{_BLOCKS[block]}/{module}/lora_{which}/MatMul"


def _parse_key(key: str) -> tuple[int, str, str, str]:
    match = _PEFT_KEY.match(key)
    if match is None:
        raise export_error(
            f"cannot map adapter weight {key!r} to the ONNX model (only layers.N.self_attn/mlp)"
        )
    layer, block, module, which = match.groups()
    return int(layer), block, module, which


def lora_scale(adapter_config: dict[str, Any]) -> float:
    r, alpha = adapter_config["r"], adapter_config["lora_alpha"]
    # rsLoRA scales by alpha/sqrt(r) instead of alpha/r.
    return alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r


def peft_to_onnx_params(adapter_dir: Path) -> dict[str, np.ndarray]:
    """PEFT weights as the builder lays them out: transposed, with B scaled by alpha/r."""
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise export_error(
            "adapters with per-module rank_pattern/alpha_pattern are not supported for onnx_adapter"
        )
    scale = lora_scale(config)
    params = {}
    for key, weight in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        layer, block, module, which = _parse_key(key)
        value = weight.T.astype("float32")
        if which == "B":
            value = value * scale
        params[onnx_weight_name(layer, block, module, which)] = value.copy()
    return params


def lora_nodes_to_exclude(adapter_dir: Path) -> list[str]:
    """The LoRA MatMul nodes, kept out of int4/int8 quantization (it would cost accuracy)."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "np") as f:
        return sorted(onnx_node_name(*_parse_key(key)) for key in f.keys())  # noqa: SIM118


def make_lora_inputs(model_path: Path, names: list[str]) -> None:
    """Turn the LoRA initializers into graph inputs whose default value is zero (no adapter)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path), load_external_data=True)
    initializers = {init.name: init for init in model.graph.initializer}
    missing = sorted(set(names) - set(initializers))
    if missing:
        raise export_error(f"the ONNX model has no LoRA weights named {missing[:3]}...")
    for name in names:
        init = initializers[name]
        zeros = numpy_helper.from_array(np.zeros(tuple(init.dims), dtype=np.float32), name)
        init.CopyFrom(zeros)
        # The rank is symbolic so adapters of another rank fit the same model.
        shape: list[Any] = list(init.dims)
        shape[1 if ".lora_A." in name else 0] = "lora_rank"
        model.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
    data_file = model_path.name + ".data"
    (model_path.parent / data_file).unlink(missing_ok=True)
    onnx.save_model(
        model, str(model_path), save_as_external_data=True, location=data_file, size_threshold=1024
    )


def write_onnx_adapter(params: dict[str, np.ndarray], path: Path) -> Path:
    import onnxruntime as ort

    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters({name: ort.OrtValue.ortvalue_from_numpy(value) for name, value in params.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    adapter.export_adapter(str(path))
    return path

"""The ONNX models of an export: the adapter merged into the base, the onnxruntime-genai model builder
run on it, and a swappable .onnx_adapter beside a base that takes the LoRA weights as inputs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubetune_api.v1alpha1 import ExportTarget, Int4Spec
from kubetune_trainer.errors import export_error, model_error

log = logging.getLogger("kubetune_trainer.export")

_BUILDER_LOG_TAIL = 3000
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Always passed to the model builder: no Hugging Face token, and never the model folder's own Python
# code (hf_remote is the builder's trust_remote_code for its config, tokenizer and peft loads).
BUILDER_SAFETY_OPTIONS = ("hf_token=false", "hf_remote=false")


def mixed_precision(int4: Int4Spec) -> str:
    """The builder's matmul_mixed_precision option for the spec's int8 layers; "" for none."""
    parts = [f"last_matmul:{int4.last_matmul}"] if int4.last_matmul == "int8" else []
    parts += [f"mixed_layers:{int4.mixed_layers}"] if int4.mixed_layers == "int8" else []
    return ",".join(parts)


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> tuple[Any, Any]:
    """Fold the LoRA weights into the base model and save the result as a plain HF folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from kubetune_trainer.models import load_model_and_tokenizer

    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        # peft would fall back to a pickled adapter_model.bin; only safetensors are loaded.
        raise model_error(f"no {ADAPTER_WEIGHTS} in the adapter {adapter_dir}: only safetensors are loaded")
    base, _ = load_model_and_tokenizer(base_dir, torch.float32)
    try:
        model = PeftModel.from_pretrained(base, adapter_dir, trust_remote_code=False).merge_and_unload()
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise model_error(f"cannot apply adapter {adapter_dir} to {base_dir}: {exc}") from exc
    # The adapter folder holds the tokenizer the model was trained with.
    tokenizer = AutoTokenizer.from_pretrained(
        adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_dir,
        trust_remote_code=False,
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def builder_arguments(
    spec: ExportTarget,
    input_dir: Path,
    onnx_dir: Path,
    cache_dir: Path,
    extra_options: tuple[str, ...] = (),
) -> list[str]:
    """The model builder's command line for the configured precision and execution provider."""
    args = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", str(input_dir), "-o", str(onnx_dir), "-p", spec.precision, "-e", spec.execution_provider,
        "-c", str(cache_dir),
    ]  # fmt: skip
    extra = [*BUILDER_SAFETY_OPTIONS, *extra_options]
    if spec.precision == "int4":
        int4 = spec.int4
        extra += [f"algo_config={int4.algorithm}", f"block_size={int4.block_size}"]
        mixed = mixed_precision(int4)
        if mixed:
            extra.append(f"matmul_mixed_precision={mixed}")
        if int4.accuracy_level is not None:
            extra.append(f"accuracy_level={int4.accuracy_level}")
    return [*args, "--extra_options", *extra]


def build_onnx(
    spec: ExportTarget,
    input_dir: Path,
    onnx_dir: Path,
    cache_dir: Path,
    extra_options: tuple[str, ...] = (),
) -> Path:
    if onnx_dir.exists():
        shutil.rmtree(onnx_dir)
    cmd = builder_arguments(spec, input_dir, onnx_dir, cache_dir, extra_options)
    log.info("building ONNX: %s", " ".join(cmd))
    # A subprocess: the builder edits sys.path, prints progress bars and holds its own copy of the
    # weights; its memory is returned when it exits.
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode != 0 or not (onnx_dir / "genai_config.json").is_file():
        tail = (result.stdout + result.stderr)[-_BUILDER_LOG_TAIL:]
        raise export_error(f"ONNX model builder failed (exit {result.returncode}): {tail}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return onnx_dir


def build_lora_base(
    target: ExportTarget, base_dir: Path, adapter_dir: Path, out_dir: Path, cache_dir: Path
) -> Path:
    """The base ONNX model with the adapter's LoRA weights as graph inputs (zero when none is active)."""
    from kubetune_trainer.onnx_adapter import lora_nodes_to_exclude, make_lora_inputs, peft_to_onnx_params

    options = [f"adapter_path={adapter_dir}"]
    if target.precision in ("int4", "int8"):
        # Quantizing the small LoRA matrices costs accuracy and saves nothing.
        options.append(f"nodes_to_exclude={','.join(lora_nodes_to_exclude(adapter_dir))}")
    model_dir = build_onnx(target, base_dir, out_dir, cache_dir, tuple(options))
    genai = json.loads((model_dir / "genai_config.json").read_text())
    make_lora_inputs(
        model_dir / genai["model"]["decoder"]["filename"], sorted(peft_to_onnx_params(adapter_dir))
    )
    return model_dir


def write_adapter_file(adapter_dir: Path, path: Path) -> Path:
    """The PEFT adapter as an .onnx_adapter for a base from build_lora_base (any with the same inputs)."""
    from kubetune_trainer.onnx_adapter import peft_to_onnx_params, write_onnx_adapter

    return write_onnx_adapter(peft_to_onnx_params(adapter_dir), path)

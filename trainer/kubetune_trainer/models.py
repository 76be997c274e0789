"""Loading base models: Hugging Face folders, GGUF files, and LoRA target discovery."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_trainer.errors import model_error

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

    from kubetune_api.v1alpha1 import QuantizationSpec

log = logging.getLogger(__name__)

# Leaf names that hold the attention projections in the architectures we support (Llama, Mistral,
# Qwen, Phi, GPT-2 style); used to pick the default LoRA targets.
_ATTENTION_PARENTS = ("attn", "attention")


def load_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF checkpoint de-quantized to fp32, ready to be saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise model_error(f"GGUF file not found: {gguf_path}")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        # A GGUF file holds tensors, never code or pickles; no repository code is run either.
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise model_error(f"cannot load GGUF {gguf_path}: {exc}") from exc
    _detach_gguf_quantizer(model)
    return model, tokenizer


def _detach_gguf_quantizer(model: PreTrainedModel) -> None:
    # transformers de-quantizes every GGUF tensor to plain fp32 at load time but keeps the GGUF
    # quantizer attached, which makes save_pretrained refuse ("not serializable") and marks the
    # model as not trainable. The weights are ordinary tensors, so dropping the quantizer is safe.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in model.__dict__:
            delattr(model, attr)


def save_hf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF file into a Hugging Face safetensors folder (weights, config, tokenizer)."""
    model, tokenizer = load_gguf(gguf_path)
    return save_hf(model, tokenizer, out_dir)


def find_gguf(path: Path) -> Path | None:
    """The GGUF file that `path` names or holds alone, if any."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1 and not (path / "config.json").is_file():
            return found[0]
    return None


def ensure_hf_folder(path: Path, workdir: Path) -> Path:
    """Return an HF folder for a local base model, converting a GGUF file into `workdir` first."""
    gguf = find_gguf(path)
    if gguf is not None:
        out = workdir / "base-hf"
        log.info("converting GGUF %s to a safetensors folder in %s", gguf, out)
        return convert_gguf_to_hf(gguf, out)
    if not (path / "config.json").is_file():
        raise model_error(f"base model {path} is neither a .gguf file nor a folder with config.json")
    return path


def load_model_and_tokenizer(
    path: Path, dtype: torch.dtype, quantization_config: BitsAndBytesConfig | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = {"quantization_config": quantization_config} if quantization_config is not None else {}
    try:
        # Safetensors only (never unpickle weights) and no code from the model folder.
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=False, **quantized
        )
    except (ValueError, OSError, KeyError) as exc:
        raise model_error(f"cannot load base model from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any token can stand in.
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_for_training(
    path: Path, quantization: QuantizationSpec | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base in fp32; for qlora with the blocks' Linear layers quantized by bitsandbytes."""
    import torch

    if quantization is None:
        return load_model_and_tokenizer(path, torch.float32)
    from kubetune_trainer.quantization import keep_4bit_layers_trainable, to_bnb_config

    model, tokenizer = load_model_and_tokenizer(path, torch.float32, to_bnb_config(quantization))
    # Before any forward pass (the before-training generation check is one): see quantization.py.
    keep_4bit_layers_trainable(model)
    return model, tokenizer


def linear_module_names(model: Any) -> dict[str, list[str]]:
    """Leaf names of the Linear layers inside the repeated blocks, with their full module paths."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: dict[str, list[str]] = {}
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output:
            names.setdefault(full_name.rsplit(".", 1)[-1], []).append(full_name)
    return names


def discover_target_modules(model: Any) -> list[str]:
    """Default LoRA targets: the attention projections (q/k/v/o), else every Linear but the LM head."""
    linear = linear_module_names(model)
    if not linear:
        raise model_error("the model has no Linear layers to attach LoRA to")
    attention = sorted(
        leaf
        for leaf, paths in linear.items()
        if any(
            part in path.rsplit(".", 1)[0].rsplit(".", 1)[-1] for path in paths for part in _ATTENTION_PARENTS
        )
    )
    return attention or sorted(linear)

"""QLoRA's frozen base: the bitsandbytes config converter, and a guard against a CPU layout trap.

The trap (bitsandbytes 0.50): on CPUs with avx512_bf16, the first inference-style forward pass of a
`Linear4bit` (eval mode, no grad: a `generate` call, an evaluation) repacks its weights into a layout
that only the inference kernel understands. Training after that computes wrong gradients and the loss
stays flat; the only sign is a UserWarning from `gemv_4bit` about autograd. We switch the repacking
off on every 4-bit layer right after loading (`support_avx512bf16_for_cpu = False`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kubetune_api.v1alpha1 import QuantizationSpec
from kubetune_trainer.errors import config_error, model_error

if TYPE_CHECKING:
    import torch
    from transformers import BitsAndBytesConfig

log = logging.getLogger(__name__)

TORCH_DTYPES: dict[str, str] = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, TORCH_DTYPES[name])
    return dtype


def check_compute_dtype(spec: QuantizationSpec, cuda_available: bool) -> None:
    if spec.bits == 4 and spec.four_bit_compute_dtype == "fp16" and not cuda_available:
        raise config_error("quantization.computeDtype fp16 needs a GPU; use bf16 or fp32 on CPU")


def to_bnb_config(spec: QuantizationSpec) -> BitsAndBytesConfig:
    import torch
    from transformers import BitsAndBytesConfig

    check_compute_dtype(spec, torch.cuda.is_available())
    if spec.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=spec.four_bit_type,
        bnb_4bit_use_double_quant=spec.four_bit_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(spec.four_bit_compute_dtype),
    )


def keep_4bit_layers_trainable(model: Any) -> int:
    """Disable the inference-only CPU repacking on every `Linear4bit` (see the module docstring).

    Call it before any forward pass; returns how many layers it guarded. A layer already repacked
    cannot be restored exactly (bitsandbytes rounds its scales to bf16 on the way), so that is an error."""
    import bitsandbytes as bnb

    guarded = 0
    for module in model.modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        if getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False):
            raise model_error(
                "a 4-bit layer was already repacked for CPU inference, so training it would compute wrong "
                "gradients; guard the model right after loading, before any forward pass"
            )
        module.support_avx512bf16_for_cpu = False
        guarded += 1
    log.info("4-bit layers guarded against CPU inference repacking: %d", guarded)
    return guarded

"""Peak training memory of one device, estimated by arithmetic over the model's config numbers.

No weights, no torch: the plan (plan.py) feeds it the numbers of the model config and the parameter
counts it took from the module tree on the meta device. The terms, in bytes:

- weights: every parameter as the trainer loads it. lora and full load the base in fp32 (bf16/fp16
  training autocasts; the master weights stay fp32); qlora stores the blocks' Linear weights in 4 bits
  (plus one fp32 absmax per 64 weights, or 8 bits per constant with double quantization) or 8 bits
  (plus one fp32 scale per output row), and keeps embeddings, norms and the LM head in fp32.
- trainable state: per trainable parameter its fp32 gradient and AdamW's two fp32 moments (12 bytes);
  the trainable weights themselves are in `weights`.
- activations: what autograd keeps for the backward pass, per token and layer, in the activation dtype
  (4 bytes in fp32, 2 under bf16/fp16 autocast). A Llama-style block keeps 3 hidden-sized tensors per
  RMSNorm (input, normalized, scaled; two norms), the attention's q, k, v and output and the o_proj
  input (3h + 2 kv), the MLP's gate, up, SiLU output and product (4 i), and per LoRA target its
  dropout output plus a one-byte mask (1.25 x its input size). Attention is taken as a fused kernel
  (flash / memory-efficient SDPA): no seq x seq matrix. With gradient checkpointing every layer keeps
  its input only, and one layer at a time is recomputed with its full activations.
- logits: the LM head runs on labeled positions only (labeled_head.py). Fused with its loss
  (fused_head_loss.py, where the model's logits are the head's plain output) it holds one chunk's fp32
  logits and log-softmax at a time, plus the hidden states' gradient of every labeled position;
  otherwise, per labeled position, the fp32 logits, cross-entropy's log-softmax and the gradients
  flowing back through both: 4 x vocab x 4 bytes (the fourth, a backward temporary, measured on the
  CPU).
- overhead: what a training process holds beside the model. On the CPU 192 MiB, measured (SmolLM2,
  docs/trainer.md): the kernels' code paged in by the first step, tokenizer, data, the Trainer and
  allocator slack. On a GPU the CUDA context and the cuBLAS workspace, 512 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MiB = 1024 * 1024
FP32 = 4
# bytes per activation element by training precision: fp32, or autocast to a 16-bit type.
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Gradient (fp32) + AdamW exp_avg + exp_avg_sq (fp32 each) per trainable parameter.
TRAINABLE_STATE_BYTES = 3 * FP32
# Logits, log-softmax and their gradients, all fp32, per labeled position and vocabulary entry.
LOGIT_COPIES = 4
# The fused head loss: a chunk's logits and their log-softmax (turned into the gradient in place).
FUSED_LOGIT_COPIES = 2
# A LoRA target keeps its dropout output and the dropout mask (one byte per element): 1.25 x input.
LORA_TARGET_FACTOR = 1.25
OVERHEAD_BYTES = {"cpu": 192 * MiB, "gpu": 512 * MiB}
# bitsandbytes: 4-bit weights with an fp32 absmax per block of 64 (double quant: 8-bit constants with
# an fp32 absmax per 256 of them); 8-bit weights with an fp32 scale per output row.
QUANT_BLOCK = 64

Method = Literal["lora", "qlora", "full"]
Device = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class ModelShape:
    """The config numbers the estimate needs, and the parameter counts of the meta module tree."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tied_embeddings: bool
    total_parameters: int
    # Parameters of the Linear layers inside the repeated blocks (what qlora quantizes).
    block_linear_parameters: int
    head_dim: int | None = None
    # Rows per chunk where the head is fused with its loss (fused_head_loss.CHUNK_ROWS); None: not fused.
    head_chunk_rows: int | None = None

    @property
    def kv_size(self) -> int:
        head_dim = self.head_dim or self.hidden_size // max(self.num_heads, 1)
        return self.num_kv_heads * head_dim


@dataclass(frozen=True)
class Setting:
    method: Method
    precision: str  # fp32, bf16 or fp16 (training precision, auto resolved)
    batch_size: int
    seq_length: int  # tokens of the longest batch row
    labeled_share: float  # share of positions whose next token carries a label
    gradient_checkpointing: bool
    trainable_parameters: int
    # Sizes of the inputs of the LoRA target layers (one entry per adapted module, in one block).
    lora_target_inputs: tuple[int, ...] = ()
    quant_bits: int = 4
    double_quant: bool = True
    device: Device = "gpu"


@dataclass(frozen=True)
class Estimate:
    weights: int
    trainable_state: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.logits + self.overhead


def weight_bytes(shape: ModelShape, setting: Setting) -> int:
    if setting.method != "qlora":
        return shape.total_parameters * FP32
    quantized = shape.block_linear_parameters
    if setting.quant_bits == 8:
        rows = quantized // max(shape.hidden_size, 1)  # about one scale per output row
        packed = quantized + rows * FP32
    else:
        blocks = -(-quantized // QUANT_BLOCK)
        constants = blocks * 1 + -(-blocks // 256) * FP32 if setting.double_quant else blocks * FP32
        packed = -(-quantized // 2) + constants
    lora = setting.trainable_parameters * FP32
    return packed + (shape.total_parameters - quantized) * FP32 + lora


def layer_activation_elements(shape: ModelShape, setting: Setting) -> float:
    """Elements autograd keeps per token in one block, without checkpointing."""
    h, kv, i = shape.hidden_size, shape.kv_size, shape.intermediate_size
    norms = 2 * 3 * h
    attention = 3 * h + 2 * kv
    mlp = 4 * i
    lora = LORA_TARGET_FACTOR * sum(setting.lora_target_inputs) if setting.method != "full" else 0.0
    return norms + attention + mlp + lora


def activation_bytes(shape: ModelShape, setting: Setting) -> int:
    tokens = setting.batch_size * setting.seq_length
    per_element = ACTIVATION_BYTES.get(setting.precision, FP32)
    layer = layer_activation_elements(shape, setting) * tokens * per_element
    if setting.gradient_checkpointing:
        # The blocks' inputs (the residual stream stays fp32), plus one block recomputed at a time.
        return int(shape.num_layers * shape.hidden_size * tokens * FP32 + layer)
    return int(shape.num_layers * layer)


def logit_bytes(shape: ModelShape, setting: Setting) -> int:
    labeled = setting.batch_size * setting.seq_length * setting.labeled_share
    if shape.head_chunk_rows:
        chunk = FUSED_LOGIT_COPIES * min(labeled, shape.head_chunk_rows) * shape.vocab_size
        return int((chunk + labeled * shape.hidden_size) * FP32)
    return int(LOGIT_COPIES * labeled * shape.vocab_size * FP32)


def estimate(shape: ModelShape, setting: Setting) -> Estimate:
    return Estimate(
        weights=weight_bytes(shape, setting),
        trainable_state=setting.trainable_parameters * TRAINABLE_STATE_BYTES,
        activations=activation_bytes(shape, setting),
        logits=logit_bytes(shape, setting),
        overhead=OVERHEAD_BYTES[setting.device],
    )


def lora_parameters(target_shapes: list[tuple[int, int]], r: int, dora: bool = False) -> int:
    """LoRA's trainable parameters: r x (in + out) per adapted Linear; DoRA adds a magnitude per output."""
    return sum(r * (n_in + n_out) + (n_out if dora else 0) for n_in, n_out in target_shapes)

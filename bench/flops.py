"""The distance to the machine's limit: the model FLOPs a method needs per real token, and the machine's
peak from a matmul microbenchmark at the training dtype. MFU = FLOPs per token x tokens/s / peak.

Per real token of a decoder with L layers, hidden size h, vocabulary V, matmul weights W per layer
(q, k, v, o, gate, up, down), and an average attention context c (the keys a token attends to within
its own example: (n + 1) / 2 for an example of n tokens):

- forward: 2 L W (matmuls) + 4 L c h_attn (scores and weighted values) + 2 h V (the LM head)
- backward, frozen base (LoRA): the input gradients only, as many FLOPs as the forward matmuls, and
  twice the attention; no weight gradients except the adapter's
- LoRA adapter on a module with in/out features: 2 r (in + out) forward, twice that backward
- full fine-tuning: weight gradients too, so the matmuls count three times (the 6N rule)

The LM head counts at every position for every case, as the model defines it: a case that skips it
where no label is trained does less work for the same tokens, which shows as a higher MFU.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenFlops:
    forward: float
    backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward


def per_token(config: Any, method: str, lora_r: int, lora_targets: list[str], context: float) -> TokenFlops:
    h, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = config.num_key_value_heads * head_dim
    shapes = {  # (in, out) of each projection
        "q_proj": (h, heads * head_dim),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (heads * head_dim, h),
        "gate_proj": (h, config.intermediate_size),
        "up_proj": (h, config.intermediate_size),
        "down_proj": (config.intermediate_size, h),
    }
    matmul = 2 * L * sum(i * o for i, o in shapes.values())
    attention = 4 * L * context * heads * head_dim
    head = 2 * h * V
    forward = matmul + attention + head
    if method == "full":
        return TokenFlops(forward, 2 * matmul + 2 * attention + 2 * head)
    adapter = 2 * L * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in lora_targets)
    return TokenFlops(forward + adapter, matmul + 2 * attention + head + 2 * adapter)


def mean_context(lengths: list[int]) -> float:
    """The average number of keys a token attends to, over examples of these lengths (causal)."""
    tokens = sum(lengths)
    return sum(n * (n + 1) / 2 for n in lengths) / tokens if tokens else 0.0


def device_name() -> str:
    """What the cases train on: the GPU's name, or the CPU's architecture."""
    import platform

    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU"


def peak_flops(dtype: str = "fp32", seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s of this machine with torch's own kernels and threads (the best of runs).

    The matrices grow to 2,048 (8,192 on a GPU, timing several products at once so that launches and
    the synchronisation do not count) while one product stays well within the time given: a dtype the
    CPU has no instructions for (bf16 without AVX-512 BF16) runs a thousand times slower.
    """
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    cuda = torch.cuda.is_available()
    largest, products = (8192, 10) if cuda else (2048, 1)
    device = "cuda" if cuda else "cpu"

    @functools.cache
    def matrices(size: int) -> tuple[Any, Any]:
        a, b = torch.randn(2, size, size, dtype=torch_dtype, device=device)
        return a, b

    def rate(size: int) -> float:
        a, b = matrices(size)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(products):
            torch.mm(a, b)
        if cuda:
            torch.cuda.synchronize()
        return products * 2 * size**3 / (time.perf_counter() - start)

    size = 256
    while size < largest and products * 2 * (2 * size) ** 3 / rate(size) < seconds / 10:
        size *= 2
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or best == 0.0:
        best = max(best, rate(size))
    return best

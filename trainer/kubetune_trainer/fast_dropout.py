"""LoRA dropout with a faster mask on the CPU.

PEFT applies dropout to the input of every LoRA module (four per layer on q/k/v/o). On the CPU, torch
draws each mask element from its Mersenne Twister one at a time: measured on SmolLM2 at 810 tokens a
step, those masks took 16% of the step. Here the mask comes from NumPy's SFC64 generator as 16-bit
integers (about four times faster with the multiply), seeded per call from torch's own generator, so
`training.seed` and a resumed checkpoint's saved RNG state still decide every mask. The drop probability
is rounded to a multiple of 1/65,536 (0.05 becomes 0.0500031); FlashAttention's dropout rounds to 1/256.
On a GPU, or when not training, it is torch's dropout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LEVELS = 1 << 16


class FastDropout(torch.nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = np.uint16(min(round(p * LEVELS), LEVELS - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        return x * self.mask(x.shape, x.dtype)

    def mask(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """Kept positions at 1 / (1 - p), dropped ones at 0."""
        seed = int(torch.randint(0, 2**62, (1,)).item())
        generator = np.random.Generator(np.random.SFC64(seed))
        draws = generator.integers(0, LEVELS, size=tuple(shape), dtype=np.uint16)
        kept = torch.from_numpy(draws >= self.threshold)
        return kept.to(dtype).mul_(1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def install(model: Any) -> int:
    """Puts FastDropout in place of every LoRA dropout of a PEFT model; returns how many it replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                dropouts[name] = FastDropout(dropout.p)
                replaced += 1
    return replaced

"""The LM head and its cross-entropy in one pass over row chunks, with the gradient computed on the way.

The plain path materializes the logits (positions x vocabulary: 190 MB in fp32 for 1,000 positions of
SmolLM2's 49,152 tokens), their log-softmax, a zero-filled gradient of the same size and the
log-softmax's backward: four full-size tensors a step, each written and read again, and each fresh from
the allocator. Here the head runs over CHUNK_ROWS positions at a time: logits, log-softmax, the loss of
the targets, then softmax minus one-hot, which is the gradient of the summed loss with respect to those
logits, is multiplied straight back into the gradient of the hidden states (and of the head's weight
when it is trained). The chunk's logits are then dropped; the backward pass only scales the gradients
kept from the forward by the loss's own incoming gradient (the 1 / token-count normalisation).

The result is the same sum of token losses as `F.cross_entropy(..., reduction="sum")` on the full
logits, in float32 for any model dtype, as transformers' loss computes it.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ROWS = 128


class _HeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], CHUNK_ROWS):
            rows = hidden[start : start + CHUNK_ROWS]
            chunk_targets = targets[start : start + CHUNK_ROWS, None]
            log_probs = torch.log_softmax(torch.mm(rows, weight.t()).float(), dim=1)
            total -= log_probs.gather(1, chunk_targets).sum()
            grad_logits = log_probs.exp_()
            grad_logits.scatter_add_(1, chunk_targets, grad_logits.new_full(chunk_targets.shape, -1.0))
            grad_logits = grad_logits.to(hidden.dtype)
            torch.mm(grad_logits, weight, out=grad_hidden[start : start + CHUNK_ROWS])
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t().float(), rows.float())
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[Any, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_total.to(grad_hidden.dtype)
        weight_grad = None if grad_weight is None else (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden * scale, weight_grad, None


def head_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of cross_entropy(hidden @ weight.T, targets), in float32, differentiable in hidden
    (and in weight when it requires a gradient)."""
    return _HeadCrossEntropy.apply(hidden, weight, targets)

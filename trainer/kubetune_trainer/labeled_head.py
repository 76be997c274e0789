"""The LM head and the loss computed only at positions that carry a label.

A causal LM computes vocabulary logits at every position, but the loss reads only those whose next token
is trained. With assistant-only or completion-only loss most positions carry no label (a long system
prompt, a short answer), and the head is a large matmul (SmolLM2: 576 x 49,152, a fifth of the model's
FLOPs per token). A forward pre-hook on the output embedding hands it only the hidden states of labeled
positions; the loss is then the same cross-entropy over the same targets as transformers' causal LM loss
(summed over the batch's labeled tokens, divided by the accumulated batch's count), so the gradients do
not change. The model is still called through its own forward (and any DDP/FSDP wrapper around it), so
logit soft-capping and scaling, which models apply after the head, stay in place.

Where the logits are exactly the head's output (PLAIN_LOGITS) the head is skipped as well: the model
hands back the selected hidden states, and the loss comes from them and the head's weight in one fused,
chunked pass (fused_head_loss) instead of full-size logits, log-softmax and their gradients. That pass
reads the head's whole weight outside the model's forward: right under DDP (the trainer's only wrapper),
not under a wrapper that shards parameters (FSDP, ZeRO-3), which would need a guard here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from kubetune_trainer.data import IGNORE
from kubetune_trainer.fused_head_loss import head_cross_entropy_sum

# Architectures whose logits are the head's output unchanged: no soft-capping or scaling after it
# (Gemma 2's final_logit_softcapping, Cohere's logit_scale and Granite's logits_scaling would be lost).
PLAIN_LOGITS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3"})


def predictions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources, targets) of a batch's causal LM loss: each position, flattened over the batch, whose
    next token has a label, and that label."""
    predicts = torch.zeros_like(labels, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != IGNORE
    return predicts.flatten().nonzero().squeeze(1), labels[:, 1:][predicts[:, :-1]]


def head_can_fuse(model: Any) -> bool:
    """Whether the model's logits are its bias-free Linear head's output unchanged (PLAIN_LOGITS)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return isinstance(head, torch.nn.Linear) and head.bias is None and model_type in PLAIN_LOGITS


class LabeledPositionsHead:
    """Installs the pre-hook on the model's output embedding; `selecting(sources)` arms it for one call."""

    def __init__(self, model: Any, fused_loss: bool = True) -> None:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self._selected: torch.Tensor | None = None
        self._skip_head = False
        self.head = head if isinstance(head, torch.nn.Linear) else None
        self.supported = self.head is not None
        self.fused = fused_loss and head_can_fuse(model)
        if self.head is not None:
            self.head.register_forward_pre_hook(self._select_hidden)
            if self.fused:
                # This instance's forward only, so that the model still calls the head (and its hooks).
                compute_logits = self.head.forward
                self.head.forward = (  # type: ignore[method-assign]
                    lambda input: input if self._skip_head else compute_logits(input)
                )

    def _select_hidden(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self._selected is None:
            return None
        hidden, *rest = args
        return (hidden.flatten(0, -2)[self._selected], *rest)

    @contextmanager
    def selecting(self, sources: torch.Tensor) -> Iterator[None]:
        """Arms the hook for one call: the head sees the hidden states at `sources` (positions flattened
        over the batch, in the order of their targets, repeated where one position predicts several)."""
        self._selected = sources
        self._skip_head = self.fused
        try:
            yield
        finally:
            self._selected = None
            self._skip_head = False

    def loss(
        self, head_output: torch.Tensor, targets: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """transformers' causal LM loss over the selected positions, from what the model returned as its
        logits: the logits themselves, or the selected hidden states where the head was skipped."""
        if self.fused and self.head is not None:
            summed = head_cross_entropy_sum(head_output, self.head.weight, targets)
        else:
            summed = F.cross_entropy(head_output.float(), targets, reduction="sum")
        return normalized(summed, targets, num_items_in_batch)


def normalized(loss: torch.Tensor, targets: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """A sum over the labeled tokens divided by the accumulated batch's count, or their mean without one."""
    if num_items_in_batch is None:
        return loss / max(targets.numel(), 1)
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch

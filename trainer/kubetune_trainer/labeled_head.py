"""The LM head and the loss computed only at positions that carry a label.

A causal LM computes vocabulary logits at every position, but the loss reads only those whose next token
is trained. With assistant-only or completion-only loss most positions carry no label (a long system
prompt, a short answer), and the head is a large matmul (SmolLM2: 576 x 49,152, a fifth of the model's
FLOPs per token). A forward pre-hook on the output embedding hands it only the hidden states of labeled
positions; the loss is then the same cross-entropy over the same targets as transformers' causal LM loss
(summed over the batch's labeled tokens, divided by the accumulated batch's count), so the gradients do
not change. The model is still called through its own forward (and any DDP/FSDP wrapper around it), so
logit soft-capping and scaling, which models apply after the head, stay in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from kubetune_trainer.data import IGNORE


class LabeledPositionsHead:
    """Installs the pre-hook on the model's output embedding; `selecting(labels)` arms it for one call."""

    def __init__(self, model: Any) -> None:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self._selected: torch.Tensor | None = None
        self.supported = isinstance(head, torch.nn.Linear)
        if isinstance(head, torch.nn.Linear):
            head.register_forward_pre_hook(self._select_hidden)

    def _select_hidden(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self._selected is None:
            return None
        hidden, *rest = args
        return (hidden[self._selected], *rest)

    @contextmanager
    def selecting(self, labels: torch.Tensor) -> Iterator[torch.Tensor]:
        """Arms the hook for the positions whose next token has a label; yields those targets."""
        predicts = torch.zeros_like(labels, dtype=torch.bool)
        predicts[:, :-1] = labels[:, 1:] != IGNORE
        self._selected = predicts
        try:
            yield labels[:, 1:][predicts[:, :-1]]
        finally:
            self._selected = None


def labeled_loss(logits: torch.Tensor, targets: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """transformers' causal LM loss over already selected positions: a sum over the labeled tokens
    divided by the accumulated batch's count, or their mean without one."""
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    if num_items_in_batch is None:
        return loss / max(targets.numel(), 1)
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch

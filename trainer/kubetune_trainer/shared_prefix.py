"""A prefix that every example of a one-row batch shares, computed once for all of them in training.

Chat data often opens every example with the same long system prompt, and a text template with the same
words. In a causal model a position's hidden states depend only on the tokens up to it, at their
positions, so the shared prefix's hidden states are the same in every example: computing them once and
letting each example's own tokens attend to that one copy gives the same outputs, and the backward pass
sums the prefix's gradients from every example, as the separate copies' gradients would have summed in
the shared weights. On the chat benchmark (the same 84 tokens opening every example, about 17 after
them) ten examples a step take 256 positions instead of 1,012 (docs/benchmarks.md).

The collator finds the prefix (collators.shared_prefix_length: the same ids and labels in every
example); `layout` turns its one-row batch into the shared one, and names each prediction the loss makes
as (the position whose hidden state predicts, the target id). A prefix position predicts its next token
once per example, and the prefix's last position predicts each example's first token of its own, so
sources repeat; the labeled-positions head gathers them as given, and the loss is the same sum over the
same targets. The attention (per_example_attention with a prefix) lets each example's tokens see the
prefix and their own tokens only.

LoRA dropout draws one mask for the shared prefix instead of one per example: another draw of the same
distribution, not the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kubetune_trainer.data import IGNORE


@dataclass(frozen=True)
class SharedBatch:
    input_ids: torch.Tensor  # (1, prefix + sum of the examples' own lengths)
    position_ids: torch.Tensor
    own_lengths: list[int]  # each example's length after the prefix, in order
    sources: torch.Tensor  # the position predicting each target, into the shared row
    targets: torch.Tensor


def layout(input_ids: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor, prefix: int) -> SharedBatch:
    """The one-row batch (examples back to back, each example's first label -100) with its first
    `prefix` positions shared: the prefix once, then each example's own positions."""
    n_examples = len(lengths)
    example = torch.repeat_interleave(torch.arange(n_examples, device=lengths.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(len(example), device=lengths.device) - starts[example]
    keep = (offset >= prefix) | (example == 0)
    # Where each original position's hidden state is in the shared row: a prefix position's is the first
    # example's (kept first, so at its own offset).
    shared_at = torch.where(keep, torch.cumsum(keep, 0) - 1, offset)
    row_labels = labels[0]
    # Position p predicts label p + 1; each example's first label is -100, so none crosses examples.
    predicted = row_labels[1:] != IGNORE
    return SharedBatch(
        input_ids=input_ids[:, keep],
        position_ids=offset[keep].unsqueeze(0),
        own_lengths=(lengths - prefix).tolist(),
        sources=shared_at[:-1][predicted],
        targets=row_labels[1:][predicted],
    )

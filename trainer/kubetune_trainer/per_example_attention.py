"""Attention per example for packed batches of short examples, on the CPU.

A packed batch (PackingCollator) holds several examples per row, each row padded to the longest. With
SDPA, transformers gives every row a block-diagonal causal mask, so the attention kernel computes the
row's whole square and throws most of it away, and every layer also computes the padded positions.
When rows hold two or more examples on average, the collator instead lays the batch out as one row of
its examples back to back, shortest first, with no padding at all (`EXAMPLE_LENGTHS` says where each
one ends). While `attending(model, lengths)` is active, the model's attention takes each run of
examples of the same length as a batch of separate sequences (its queries, keys and values are views
of the row; the outputs are copied back into one) and runs plain causal SDPA on it: no mask and no
padded positions. Measured on SmolLM2-135M with 60 tone examples a step: 1.08x faster a step, paired,
with the same losses (docs/benchmarks.md). With a shared prefix (shared_prefix), the row opens with it:
the prefix is attended causally on its own, and each example's queries see the prefix's keys and values
(one copy, expanded) before their own.

It applies where the attention is plain scaled dot-product attention over the whole example: no
attention dropout, no soft-capping, no sliding window shorter than the longest example, and the
architectures below. Not with gradient checkpointing (its recomputed forward would run outside
`attending`), and not on a GPU, where it is unmeasured and flash attention reads packed rows natively.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

# The attention implementation's name while a batch of examples is being attended; otherwise the model
# keeps its own ("sdpa").
NAME = "kubetune_per_example"
# Decoder-only architectures whose attention is SDPA over rotary-embedded queries and keys, with
# nothing else between them (no soft-capping, attention sinks or learned biases on the scores).
PLAIN_ATTENTION = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3"})

# The lengths of the one-row batch's examples being attended, and of the prefix they share before them
# (shared_prefix), set by `attending` only.
_lengths: list[int] | None = None
_prefix = 0


def usable(model: Any, max_seq_length: int, gradient_checkpointing: bool) -> bool:
    """Whether this model's training may use the one-row layout (see the module's docstring)."""
    config = getattr(model, "config", None)
    if config is None or gradient_checkpointing or torch.cuda.is_available():
        return False
    window = getattr(config, "sliding_window", None)
    return (
        config.model_type in PLAIN_ATTENTION
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and float(getattr(config, "attention_dropout", 0.0) or 0.0) == 0.0
        and getattr(config, "attn_logit_softcapping", None) is None
        and (window is None or window >= max_seq_length)
    )


def runs_of_equal_length(lengths: Sequence[int]) -> list[tuple[int, int]]:
    """(count, length) of each run of equal lengths, in order."""
    runs: list[tuple[int, int]] = []
    for n in lengths:
        if runs and runs[-1][1] == n:
            runs[-1] = (runs[-1][0] + 1, n)
        else:
            runs.append((1, n))
    return runs


def _as_sequences(x: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """(1, heads, count * length, dim) -> (count, heads, length, dim), a view."""
    return x[0].unflatten(1, (count, length)).transpose(0, 1)


def per_example_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if _lengths is None or query.shape[0] != 1 or query.shape[2] != _prefix + sum(_lengths):
        # Outside `attending` the model's config names its own implementation, so this is never called;
        # falling back to unmasked SDPA here would let examples attend to each other.
        raise RuntimeError("per-example attention called without the one-row batch's example lengths")
    runs = runs_of_equal_length(_lengths)
    sizes = [_prefix] + [count * length for count, length in runs]
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    (q_prefix, *q_runs), (k_prefix, *k_runs), (v_prefix, *v_runs) = (
        x.split(sizes, 2) for x in (query, key, value)
    )
    outputs = []
    if _prefix:
        out = F.scaled_dot_product_attention(
            q_prefix, k_prefix, v_prefix, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa
        )
        outputs.append(out[0].transpose(0, 1))
    for (count, length), q, k, v in zip(runs, q_runs, k_runs, v_runs, strict=True):
        keys, values = _as_sequences(k, count, length), _as_sequences(v, count, length)
        mask = None
        if _prefix:
            # Each example's own positions see the one prefix and, causally, themselves.
            keys = torch.cat([k_prefix.expand(count, -1, -1, -1), keys], 2)
            values = torch.cat([v_prefix.expand(count, -1, -1, -1), values], 2)
            mask = torch.ones(length, _prefix + length, dtype=torch.bool, device=q.device).tril(_prefix)
        out = F.scaled_dot_product_attention(
            _as_sequences(q, count, length),
            keys,
            values,
            attn_mask=mask,
            dropout_p=dropout,
            scale=scaling,
            is_causal=mask is None,
            enable_gqa=gqa,
        )
        outputs.append(out.transpose(1, 2).reshape(count * length, out.shape[1], out.shape[3]))
    # (batch 1, positions, heads, dim), as sdpa_attention_forward returns it.
    return torch.cat(outputs).unsqueeze(0), None


def per_example_mask(*args: Any, **kwargs: Any) -> None:
    """No mask: each example's sequence is causal on its own (only looked up inside `attending`)."""
    return None


AttentionInterface.register(NAME, per_example_attention)
AttentionMaskInterface.register(NAME, per_example_mask)


@contextmanager
def attending(model: Any, lengths: Sequence[int], prefix: int = 0) -> Iterator[None]:
    """The model's forward calls inside attend to each example of the one-row batch on its own; with a
    prefix, the row opens with that many positions every example shares and sees (shared_prefix)."""
    global _lengths, _prefix
    config = model.config
    before, outer = config._attn_implementation, (_lengths, _prefix)
    config._attn_implementation = NAME
    _lengths, _prefix = [int(n) for n in lengths], int(prefix)
    try:
        yield
    finally:
        _lengths, _prefix = outer
        config._attn_implementation = before

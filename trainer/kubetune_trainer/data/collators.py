"""Examples to batches: padded (CausalLMCollator) or packed without padding (PackingCollator)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kubetune_trainer.data.types import IGNORE, Example

if TYPE_CHECKING:
    import torch

log = logging.getLogger("kubetune_trainer.data")


class CausalLMCollator:
    """Pads a batch to its longest example. Labels are the examples' own (prompt tokens at -100) or,
    without them, every real token; padding is always masked."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
        for i, example in enumerate(examples):
            ids = torch.tensor(example["input_ids"], dtype=torch.long)
            input_ids[i, : len(ids)] = ids
            attention_mask[i, : len(ids)] = 1
            # Labels never come from the pad id: SmolLM2 pads with its EOS token, which must still be
            # learned at the end of each example.
            labels[i, : len(ids)] = torch.tensor(
                example.get("labels", example["input_ids"]), dtype=torch.long
            )
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# The key a packed batch carries its real (non-padding) token count under; the trainer pops it before
# the model sees the batch (train.PackedTrainer).
REAL_TOKENS = "num_real_tokens"
# The key a one-row batch (PackingCollator's per_example_rows) carries its examples' lengths under, in
# the order they follow each other; the trainer pops it and attends to each example on its own.
EXAMPLE_LENGTHS = "example_lengths"
# The key a one-row batch carries the length of the prefix all its examples share under (the same ids: a
# system prompt, a template's opening words); the trainer pops it and, in training, computes that prefix
# once for all of them (shared_prefix).
SHARED_PREFIX = "shared_prefix"
# A batch of one example a row becomes one row only when sharing its prefix saves at least this share of
# its positions; below that, the rows' batched attention is the faster layout.
MIN_SHARED_SAVING = 0.2


class PackingCollator:
    """Padding-free batching: a batch's examples are concatenated into rows of at most `max_length`
    tokens (first-fit by decreasing length), with no attention across examples.

    Follows transformers' DataCollatorWithFlattening conventions, per row: `position_ids` restart at 0
    for every example and there is no `attention_mask`, so transformers' masking utilities build a
    block-diagonal causal mask from the position resets (sdpa, eager and flash attention all honour
    it); each example's first label is -100, so no token is trained to predict the next example. Only
    the rows' tails are padded, to the longest row: pad ids continuing the last example's positions
    (they come after it, so a causal mask keeps them from changing it), labels -100.

    per_example_rows: when the rows would hold two or more examples on average, the batch is instead one
    row of its examples back to back, shortest first, with no padding, and EXAMPLE_LENGTHS; the model
    then attends to each example on its own (per_example_attention). With one example a row the rows'
    padding is small and their batched attention is faster, so the rows stay, unless the examples share
    a prefix long enough to save MIN_SHARED_SAVING of the positions. A one-row batch whose examples
    share a prefix says how long it is (SHARED_PREFIX).
    """

    def __init__(self, pad_token_id: int, max_length: int, per_example_rows: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.per_example_rows = per_example_rows

    def rows(self, examples: list[Example]) -> list[list[Example]]:
        """The examples grouped into as few rows of at most max_length tokens as first-fit finds, then
        balanced (each example, longest first, joins the shortest row it fits in): rows are padded to
        the longest, so balanced rows waste the least."""
        ordered = sorted(examples, key=lambda e: len(e["input_ids"]), reverse=True)
        first_fit = self._fill(ordered, None)
        balanced = self._fill(ordered, len(first_fit))
        return balanced if balanced is not None else first_fit

    def _fill(self, ordered: list[Example], n_rows: int | None) -> Any:
        # n_rows None: first fit, opening rows as needed. Else: shortest row first, None if one overflows.
        rows: list[list[Example]] = [[] for _ in range(n_rows or 0)]
        lengths = [0] * len(rows)
        for example in ordered:
            n = len(example["input_ids"])
            if n_rows is None:
                fits = [i for i, used in enumerate(lengths) if used + n <= self.max_length]
                i = fits[0] if fits else len(rows)
                if not fits:
                    rows.append([])
                    lengths.append(0)
            else:
                i = min(range(n_rows), key=lambda j: lengths[j])
                if lengths[i] + n > self.max_length:
                    return None
            rows[i].append(example)
            lengths[i] += n
        return rows

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        import torch

        examples = [e for e in examples if e["input_ids"]]
        rows = self.rows(examples)
        if self.per_example_rows and rows:
            prefix = shared_prefix_length(examples)
            saved = prefix * (len(examples) - 1)
            # Two or more examples a row: the rows' masked attention wastes most of each row's square.
            if len(examples) >= 2 * len(rows) or saved >= MIN_SHARED_SAVING * _positions(examples):
                return self.one_row(examples, prefix)
        flat_rows = [self._joined(row) for row in rows]
        longest = max(len(ids) for ids, _, _ in flat_rows)
        input_ids = torch.full((len(flat_rows), longest), self.pad_token_id, dtype=torch.long)
        labels_t = torch.full((len(flat_rows), longest), IGNORE, dtype=torch.long)
        position_ids = torch.zeros((len(flat_rows), longest), dtype=torch.long)
        for i, (ids, labels, positions) in enumerate(flat_rows):
            n = len(ids)
            input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
            labels_t[i, :n] = torch.tensor(labels, dtype=torch.long)
            position_ids[i, :n] = torch.tensor(positions, dtype=torch.long)
            position_ids[i, n:] = torch.arange(positions[-1] + 1, positions[-1] + 1 + longest - n)
        real = sum(len(ids) for ids, _, _ in flat_rows)
        return {
            "input_ids": input_ids,
            "labels": labels_t,
            "position_ids": position_ids,
            REAL_TOKENS: torch.tensor(real, dtype=torch.long),
        }

    def one_row(self, examples: list[Example], prefix: int = 0) -> dict[str, torch.Tensor]:
        """Every example in one row, shortest first (examples of one length are attended as a batch),
        no padding, with their lengths and the length of the prefix they share (when they do)."""
        import torch

        ordered = sorted(examples, key=lambda e: len(e["input_ids"]))
        ids, labels, positions = self._joined(ordered)
        batch = {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            REAL_TOKENS: torch.tensor(len(ids), dtype=torch.long),
            EXAMPLE_LENGTHS: torch.tensor([len(e["input_ids"]) for e in ordered], dtype=torch.long),
        }
        if prefix:
            batch[SHARED_PREFIX] = torch.tensor(prefix, dtype=torch.long)
        return batch

    @staticmethod
    def _joined(examples: list[Example]) -> tuple[list[int], list[int], list[int]]:
        """The examples' ids, labels (each example's first at -100) and restarting positions, joined."""
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for example in examples:
            own = list(example.get("labels", example["input_ids"]))
            ids += example["input_ids"]
            labels += [IGNORE, *own[1:]]
            positions += range(len(example["input_ids"]))
        return ids, labels, positions


def shared_prefix_length(examples: list[Example]) -> int:
    """How many leading token ids every example has in common, leaving each at least one position of its
    own; 0 for fewer than two examples, where nothing is shared. Labels may differ: each example's
    predictions keep their own targets (shared_prefix.layout)."""
    if len(examples) < 2:
        return 0
    first = examples[0]["input_ids"]
    limit = min(len(e["input_ids"]) for e in examples) - 1
    for example in examples[1:]:
        ids = example["input_ids"]
        n = 0
        while n < limit and ids[n] == first[n]:
            n += 1
        limit = n
    return limit


def _positions(examples: list[Example]) -> int:
    return sum(len(e["input_ids"]) for e in examples)

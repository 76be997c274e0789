"""The prefix every example of a one-row batch shares, computed once in training (shared_prefix): what
the collator finds, the shared layout and its predictions, the model's hidden states against each example's
own copy, and the same losses over 20 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_trainer_per_example_attention import NO_DROPOUT
from test_trainer_speedups import STEPS, case_spec, losses

from kubetune_trainer.data import EXAMPLE_LENGTHS, IGNORE, SHARED_PREFIX, PackingCollator
from kubetune_trainer.data.collators import shared_prefix_length


def example(ids: list[int], prompt: int = 0) -> dict[str, list[int]]:
    return {"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]}


# --- what the collator finds --------------------------------------------------------------------------

PREFIXES = [
    # (examples, shared prefix length, why)
    ([example([1, 2, 3, 4]), example([1, 2, 3, 5, 6])], 3, "the ids up to the first difference"),
    ([example([1, 2, 3]), example([1, 2, 3, 4])], 2, "every example keeps one position of its own"),
    ([example([1, 2, 3, 4], prompt=2), example([1, 2, 3, 5])], 3, "labels may differ"),
    ([example([1, 2, 3]), example([1, 2, 4]), example([7, 2, 3])], 0, "one example that differs at once"),
    ([example([1, 2, 3])], 0, "one example shares with nobody"),
]


@pytest.mark.parametrize(("examples", "expected", "why"), PREFIXES, ids=[p[2] for p in PREFIXES])
def test_the_collator_finds_the_prefix_every_example_shares(
    examples: list[dict[str, list[int]]], expected: int, why: str
) -> None:
    assert shared_prefix_length(examples) == expected, why


def test_one_example_a_row_with_a_long_shared_prefix_becomes_one_row() -> None:
    system = list(range(100, 130))
    examples = [example([*system, i, i + 1, i + 2], prompt=30) for i in (1, 5, 9)]
    collate = PackingCollator(pad_token_id=0, max_length=40, per_example_rows=True)
    batch = collate(examples)
    assert batch["input_ids"].shape == (1, 99)
    assert batch[EXAMPLE_LENGTHS].tolist() == [33, 33, 33] and int(batch[SHARED_PREFIX]) == 30
    # A short shared prefix saves too little: the rows stay, with no prefix named.
    short = [example([100, i, i + 1, i + 2, i + 3, i + 4]) for i in (1, 7, 13)]
    rows = PackingCollator(pad_token_id=0, max_length=8, per_example_rows=True)(short)
    assert rows["input_ids"].shape == (3, 6) and SHARED_PREFIX not in rows
    # Without per-example rows nothing changes.
    assert PackingCollator(pad_token_id=0, max_length=40)(examples)["input_ids"].shape == (3, 33)


# --- the shared layout --------------------------------------------------------------------------------


def test_the_shared_layout_keeps_the_prefix_once_and_every_prediction() -> None:
    import torch

    from kubetune_trainer.labeled_head import predictions
    from kubetune_trainer.shared_prefix import layout

    # Two examples sharing [1, 2]: [1, 2, 3] and [1, 2, 4, 5], the second with its first two tokens
    # unlabeled; each example's first label is -100.
    ids = torch.tensor([[1, 2, 3, 1, 2, 4, 5]])
    labels = torch.tensor([[IGNORE, 2, 3, IGNORE, IGNORE, 4, 5]])
    shared = layout(ids, labels, torch.tensor([3, 4]), prefix=2)
    assert shared.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert shared.position_ids.tolist() == [[0, 1, 2, 2, 3]]
    assert shared.own_lengths == [1, 2]
    # Shared position 0 predicts token 2 for the first example only (the second's is unlabeled), shared
    # position 1 each example's first own token.
    assert shared.sources.tolist() == [0, 1, 1, 3]
    assert shared.targets.tolist() == [2, 3, 4, 5]
    # The same targets, in the same order, as the unshared row's loss.
    assert torch.equal(predictions(labels)[1], shared.targets)


def test_the_shared_prefix_gives_every_example_the_hidden_states_of_its_own_copy(
    tiny_model_dir: Path,
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.labeled_head import predictions
    from kubetune_trainer.per_example_attention import attending
    from kubetune_trainer.shared_prefix import layout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.use_cache = False
    torch.manual_seed(0)
    prefix, lengths = 5, [6, 8, 8, 12]
    shared_ids = torch.randint(3, model.config.vocab_size, (prefix,))
    own_ids = [torch.randint(3, model.config.vocab_size, (n - prefix,)) for n in lengths]
    ids = torch.cat([torch.cat([shared_ids, own]) for own in own_ids]).unsqueeze(0)
    labels = ids.clone()
    labels[0, torch.cumsum(torch.tensor([0, *lengths[:-1]]), 0)] = IGNORE
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    shared = layout(ids, labels, torch.tensor(lengths), prefix)
    assert shared.input_ids.shape[1] == prefix + sum(lengths) - len(lengths) * prefix
    with torch.no_grad():
        with attending(model, lengths):
            own = model.model(input_ids=ids, position_ids=positions).last_hidden_state[0]
        with attending(model, shared.own_lengths, prefix):
            once = model.model(input_ids=shared.input_ids, position_ids=shared.position_ids)
    sources, targets = predictions(labels)
    assert torch.equal(targets, shared.targets)
    torch.testing.assert_close(once.last_hidden_state[0][shared.sources], own[sources], rtol=1e-5, atol=1e-5)


# --- training -----------------------------------------------------------------------------------------

CASES = {
    # About 200 tokens a conversation, one a row of 256: the rows become one row for the system prompt.
    "lora-chat-one-a-row": ({"format": "chat", "packing": True, "maxSeqLength": 256}, NO_DROPOUT),
    # "Phrase:" opens every tone row; gradient accumulation normalizes over both batches' targets.
    "lora-text-accumulated": (
        {"format": "text", "packing": True, "batchSize": 8, "gradientAccumulationSteps": 2},
        NO_DROPOUT,
    ),
    "full-chat": ({"format": "chat", "packing": True}, {"method": "full", "lora": None}),
}


@pytest.mark.parametrize("case", CASES)
def test_a_shared_prefix_computed_once_keeps_the_losses(
    tmp_path: Path,
    tiny_model_dir: Path,
    tone_dir: Path,
    make_input: Any,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against the same examples in padded rows: no per-example attention and no shared prefix."""
    from kubetune_trainer import shared_prefix

    settings, overrides = CASES[case]
    spec, rows = case_spec(settings, make_input, tiny_model_dir, tone_dir, tmp_path / "out", **overrides)
    shared_lengths: list[int] = []
    layout = shared_prefix.layout

    def recorded(*args: Any) -> Any:
        shared_lengths.append(args[3])
        return layout(*args)

    monkeypatch.setattr(shared_prefix, "layout", recorded)
    shapes: dict[str, list[tuple[int, ...]]] = {"rows": [], "shared": []}
    plain, _ = losses(
        spec,
        tiny_model_dir,
        rows,
        tmp_path / "rows",
        per_example_attention=False,
        batch_shapes=shapes["rows"],
    )
    assert shared_lengths == []
    ours, _ = losses(spec, tiny_model_dir, rows, tmp_path / "shared", batch_shapes=shapes["shared"])
    # Batches shared their prefix, as one row (an epoch's last batch may hold one example: nothing to share).
    batches = STEPS * spec.training.gradient_accumulation_steps
    assert len(shared_lengths) >= 0.9 * batches and min(shared_lengths) > 0, shared_lengths
    assert {batch for batch, _ in shapes["shared"]} == {1}, shapes["shared"]
    if spec.dataset.format == "chat":
        # The system prompt once a batch: far fewer positions than the rows' real tokens.
        assert sum(n for _, n in shapes["shared"]) < 0.7 * sum(b * n for b, n in shapes["rows"])
    assert len(plain) == len(ours) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, ours, strict=True)) <= 1e-3, (plain, ours)
    assert plain[-1] < plain[0]

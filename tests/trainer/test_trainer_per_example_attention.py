"""One-row batches attended per example (per_example_attention): the collator's layout, the model's
outputs against transformers' own block-diagonal attention, where it applies, and the same losses as
the packed rows over 20 steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_trainer_packing import _examples
from test_trainer_speedups import STEPS, case_spec, losses

from kubetune_trainer.data import EXAMPLE_LENGTHS, IGNORE, REAL_TOKENS, PackingCollator

# --- the collator's layout ----------------------------------------------------------------------------


def test_rows_of_several_examples_become_one_row_shortest_first_without_padding() -> None:
    examples = _examples(5, 3, 7, 3, 2, 6, prompt=1)
    batch = PackingCollator(pad_token_id=0, max_length=16, per_example_rows=True)(examples)
    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))
    assert batch[EXAMPLE_LENGTHS].tolist() == [2, 3, 3, 5, 6, 7]
    assert batch["input_ids"].shape == (1, 26) and int(batch[REAL_TOKENS]) == 26
    assert batch["input_ids"][0].tolist() == [t for e in ordered for t in e["input_ids"]]
    assert batch["position_ids"][0].tolist() == [p for e in ordered for p in range(len(e["input_ids"]))]
    # Each example's first token predicts nothing from the one before it; the rest keep their labels.
    assert batch["labels"][0].tolist() == [t for e in ordered for t in [IGNORE, *e["labels"][1:]]]


def test_rows_of_one_example_each_stay_padded_rows() -> None:
    # 3 examples in 2 rows of 8: under two a row, where the rows' own padding is small.
    examples = _examples(8, 3, 2)
    ours = PackingCollator(pad_token_id=0, max_length=8, per_example_rows=True)(examples)
    plain = PackingCollator(pad_token_id=0, max_length=8)(examples)
    assert EXAMPLE_LENGTHS not in ours
    assert {k: v.tolist() for k, v in ours.items()} == {k: v.tolist() for k, v in plain.items()}


# --- the model's outputs ------------------------------------------------------------------------------


def count_sequence_views(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each view the per-example attention takes (of q, k and v, per run of equal lengths, per
    layer) by the run's count of examples."""
    from kubetune_trainer import per_example_attention

    calls: list[int] = []
    as_sequences = per_example_attention._as_sequences

    def counted(x: Any, count: int, length: int) -> Any:
        calls.append(count)
        return as_sequences(x, count, length)

    monkeypatch.setattr(per_example_attention, "_as_sequences", counted)
    return calls


def test_attending_per_example_gives_the_outputs_of_transformers_block_diagonal_attention(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same one-row batch through the model twice: attended per example, and with the mask that
    transformers builds from the position resets (every example kept apart by the full-row kernel)."""
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.per_example_attention import attending

    views = count_sequence_views(monkeypatch)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.use_cache = False
    torch.manual_seed(0)
    lengths = [2, 4, 4, 4, 9, 13]
    ids = torch.randint(3, model.config.vocab_size, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    with torch.no_grad():
        masked = model(input_ids=ids, position_ids=positions).logits
        with attending(model, lengths):
            ours = model(input_ids=ids, position_ids=positions).logits
        after = model(input_ids=ids, position_ids=positions).logits
    # Per layer, one batch per run of equal lengths (2; 4 three times; 9; 13), a view each of q, k and v.
    assert views == [1, 1, 1, 3, 3, 3, 1, 1, 1, 1, 1, 1] * model.config.num_hidden_layers
    assert model.config._attn_implementation == "sdpa"  # restored
    torch.testing.assert_close(ours, masked, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, masked)
    # Apart: the first example alone gives the same logits as inside the row.
    with torch.no_grad():
        alone = model(input_ids=ids[:, :2], position_ids=positions[:, :2]).logits
    torch.testing.assert_close(ours[:, :2], alone, rtol=1e-5, atol=1e-5)


def test_it_applies_only_where_the_attention_is_plain_sdpa(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.per_example_attention import usable

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert usable(model, 512, gradient_checkpointing=False) is (not torch.cuda.is_available())
    # Its recomputed forward would run outside the per-example attention.
    assert not usable(model, 512, gradient_checkpointing=True)
    for name, value in [("attention_dropout", 0.1), ("sliding_window", 256), ("model_type", "gemma2")]:
        before = getattr(model.config, name, None)
        setattr(model.config, name, value)
        assert not usable(model, 512, gradient_checkpointing=False), name
        setattr(model.config, name, before)
    model.config._attn_implementation = "eager"
    assert not usable(model, 512, gradient_checkpointing=False)


# --- training -----------------------------------------------------------------------------------------

# Each case packs two or more examples a row (tone rows of about 35 tokens, chat rows of about 200), so
# the plain run trains on padded rows and the other on one row.
TEXT = {"format": "text", "packing": True, "batchSize": 8, "maxSeqLength": 128}
# LoRA dropout off: its masks are drawn per position, so the two layouts would draw different ones
# (test_trainer_speedups bounds what other masks do).
NO_DROPOUT = {"lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
CASES = {
    "lora-text-packed": (TEXT, NO_DROPOUT),
    "lora-chat-packed-accumulated": (
        {"format": "chat", "packing": True, "gradientAccumulationSteps": 2},
        NO_DROPOUT,
    ),
    "full-text-packed": (TEXT, {"method": "full", "lora": None}),
}


@pytest.mark.parametrize("case", CASES)
def test_one_row_batches_attended_per_example_keep_the_losses(
    tmp_path: Path,
    tiny_model_dir: Path,
    tone_dir: Path,
    make_input: Any,
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, overrides = CASES[case]
    spec, rows = case_spec(settings, make_input, tiny_model_dir, tone_dir, tmp_path / "out", **overrides)
    views = count_sequence_views(monkeypatch)
    shapes: dict[str, list[tuple[int, ...]]] = {"rows": [], "one-row": []}

    plain, _ = losses(
        spec,
        tiny_model_dir,
        rows,
        tmp_path / "rows",
        per_example_attention=False,
        batch_shapes=shapes["rows"],
    )
    assert views == []
    ours, _ = losses(
        spec,
        tiny_model_dir,
        rows,
        tmp_path / "one",
        per_example_attention=True,
        batch_shapes=shapes["one-row"],
    )
    assert views, "the one-row batches were not attended per example"

    # The per-example run saw one-row batches; the plain one, several rows (padded to the longest).
    assert {batch for batch, _ in shapes["one-row"]} == {1}, shapes["one-row"]
    assert min(batch for batch, _ in shapes["rows"]) > 1, shapes["rows"]
    assert len(plain) == len(ours) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, ours, strict=True)) <= 1e-3, (plain, ours)
    assert plain[-1] < plain[0]

"""training.packing: padding-free rows with positions restarting per example, no cross-example
attention, the same per-example losses as unpacked batches, and a tiny-model run that learns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import DatasetSpec
from kubetune_trainer.data import IGNORE, REAL_TOKENS, CausalLMCollator, PackingCollator, encode_rows

TONE_DIR = Path(__file__).resolve().parents[2] / "examples" / "data" / "tone"
TONE_TEMPLATE = "Phrase: {phrase}\nTone: {tone}"


def _examples(*lengths: int, prompt: int = 0) -> list[dict[str, list[int]]]:
    """Examples with distinct token ids; the first `prompt` labels of each are masked."""
    out, token = [], 10
    for n in lengths:
        ids = list(range(token, token + n))
        token += n
        out.append({"input_ids": ids, "labels": [IGNORE] * min(prompt, n) + ids[prompt:]})
    return out


# --- spec and converters -----------------------------------------------------------------------


def test_packing_defaults_off_and_starts_a_new_run(make_input) -> None:
    plain = make_input("/m", "/o", training={"maxSteps": 2})
    assert plain.spec.training.packing is False
    packed = make_input("/m", "/o", training={"maxSteps": 2, "packing": True})
    assert packed.spec.training.packing is True
    assert packed.spec.spec_hash() != plain.spec.spec_hash()


def test_training_arguments_count_tokens_by_the_packed_trainer(tmp_path: Path, make_input) -> None:
    from kubetune_trainer.peft_config import to_training_arguments

    plain = make_input("/m", "/o").spec
    assert to_training_arguments(plain, tmp_path, False).include_num_input_tokens_seen == "non_padding"
    packed = make_input("/m", "/o", training={"packing": True}).spec
    assert to_training_arguments(packed, tmp_path, False).include_num_input_tokens_seen == "no"


def test_collator_choice(make_input) -> None:
    from kubetune_trainer.train import data_collator

    collator = data_collator(make_input("/m", "/o", training={"packing": True, "maxSeqLength": 64}).spec, 0)
    assert isinstance(collator, PackingCollator) and collator.max_length == 64
    assert isinstance(data_collator(make_input("/m", "/o").spec, 0), CausalLMCollator)


# --- the packed batch --------------------------------------------------------------------------


def test_rows_fit_max_length_and_hold_every_example_once() -> None:
    collator = PackingCollator(pad_token_id=0, max_length=16)
    examples = _examples(9, 7, 5, 5, 4, 3, 16, 1)
    rows = collator.rows(examples)
    assert all(sum(len(e["input_ids"]) for e in row) <= 16 for row in rows)
    assert len(rows) == 4  # 50 tokens: the fewest rows of 16
    assert sorted(id(e) for row in rows for e in row) == sorted(id(e) for e in examples)
    batch = collator(examples)
    assert batch["input_ids"].shape == (4, 16)
    assert int(batch[REAL_TOKENS]) == 50


def test_positions_restart_and_boundary_labels_are_masked() -> None:
    examples = _examples(5, 4, 3, prompt=2)
    batch = PackingCollator(pad_token_id=0, max_length=16)(examples)
    assert batch["input_ids"].shape == (1, 12)
    assert "attention_mask" not in batch  # the position resets are the boundaries
    row = {name: batch[name][0].tolist() for name in ("input_ids", "labels", "position_ids")}
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
    assert len(starts) == 3
    for start, (example) in zip(starts, sorted(examples, key=lambda e: -len(e["input_ids"])), strict=True):
        n = len(example["input_ids"])
        assert row["input_ids"][start : start + n] == example["input_ids"]
        assert row["position_ids"][start : start + n] == list(range(n))
        # The first token of an example is never a target (it would be predicted from the previous
        # example); the rest keep the example's own labels, prompt masking included.
        assert row["labels"][start : start + n] == [IGNORE, *example["labels"][1:]]


def test_a_single_row_matches_transformers_flattening_collator() -> None:
    from transformers import DataCollatorWithFlattening

    examples = _examples(6, 4, 3, prompt=1)
    ours = PackingCollator(pad_token_id=0, max_length=64)(examples)
    ordered = sorted(examples, key=lambda e: -len(e["input_ids"]))
    theirs = DataCollatorWithFlattening(return_tensors="pt")(ordered)
    for name in ("input_ids", "labels", "position_ids"):
        assert ours[name].tolist() == theirs[name].tolist(), name


def test_row_tails_are_padded_with_ignored_labels_after_the_last_example() -> None:
    batch = PackingCollator(pad_token_id=0, max_length=8)(_examples(8, 3, 2))
    assert batch["input_ids"].shape == (2, 8)
    short = batch["input_ids"][1].tolist()
    assert short[5:] == [0, 0, 0]
    assert batch["labels"][1, 5:].tolist() == [IGNORE] * 3
    # Positions continue the last example, so the padding forms no example of its own.
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 0, 1, 2, 3, 4]


# --- on the tiny model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    model.config.use_cache = False  # as train.set_kv_cache does for packing
    return model, tokenizer


def _tone_examples(tokenizer: Any, n: int, prompt_completion: bool) -> list[dict[str, list[int]]]:
    rows = [json.loads(line) for line in (TONE_DIR / "train.jsonl").read_text().splitlines()][:n]
    if prompt_completion:
        rows = [{"prompt": f"Phrase: {r['phrase']}\nTone:", "completion": f" {r['tone']}"} for r in rows]
        spec = DatasetSpec(train_uri="/data/x.jsonl")
        return encode_rows(spec, "promptCompletion", rows, tokenizer, 64)
    spec = DatasetSpec(train_uri="/data/x.jsonl", text_template=TONE_TEMPLATE)
    return encode_rows(spec, "text", rows, tokenizer, 64)


def _per_example_losses(logits: Any, labels: Any) -> list[float]:
    import torch.nn.functional as F

    out = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        out.append(F.cross_entropy(row_logits[:-1], row_labels[1:], ignore_index=IGNORE, reduction="sum"))
    return [float(x) for x in out]


@pytest.mark.parametrize("prompt_completion", [False, True], ids=["text", "promptCompletion"])
def test_packed_losses_equal_unpacked(tiny: tuple[Any, Any], prompt_completion: bool) -> None:
    import torch

    model, tokenizer = tiny
    examples = _tone_examples(tokenizer, 8, prompt_completion)
    collator = PackingCollator(tokenizer.pad_token_id, 64)
    packed = collator(examples)
    packed.pop(REAL_TOKENS)
    padded = CausalLMCollator(tokenizer.pad_token_id)(examples)
    assert packed["input_ids"].shape[0] < len(examples)
    with torch.no_grad():
        packed_out = model(**packed)
        padded_out = model(**padded)
        # Each example alone: the reference per-example summed loss.
        alone = [
            _per_example_losses(
                model(input_ids=torch.tensor([e["input_ids"]])).logits,
                torch.tensor([e.get("labels", e["input_ids"])]),
            )[0]
            for e in examples
        ]
    # Per example: slice each one's logits out of its packed row.
    by_example = []
    for r, row in enumerate(collator.rows(examples)):
        start = 0
        for e in row:
            n = len(e["input_ids"])
            by_example.append(
                (
                    id(e),
                    _per_example_losses(
                        packed_out.logits[r : r + 1, start : start + n],
                        torch.tensor([e.get("labels", e["input_ids"])]),
                    )[0],
                )
            )
            start += n
    packed_losses = dict(by_example)
    for e, reference in zip(examples, alone, strict=True):
        assert packed_losses[id(e)] == pytest.approx(reference, rel=1e-4, abs=1e-4)
    # The batch losses (mean over the same target tokens) agree too.
    assert float(packed_out.loss) == pytest.approx(float(padded_out.loss), rel=1e-4)


def test_no_attention_crosses_examples(tiny: tuple[Any, Any]) -> None:
    import torch

    model, tokenizer = tiny
    examples = _examples(10, 8, 6)
    changed = [dict(examples[0], input_ids=[(t + 7) % 500 for t in examples[0]["input_ids"]]), *examples[1:]]
    collator = PackingCollator(tokenizer.pad_token_id, 64)
    with torch.no_grad():
        logits = [
            model(**{k: v for k, v in collator(batch).items() if k != REAL_TOKENS}).logits
            for batch in (examples, changed)
        ]
    # The first (longest) example changed; the two after it in the row see none of it.
    assert not torch.allclose(logits[0][0, :10], logits[1][0, :10])
    assert torch.allclose(logits[0][0, 10:], logits[1][0, 10:], atol=1e-5)


def test_the_kv_cache_is_what_breaks_isolation(tiny: tuple[Any, Any]) -> None:
    """Why train() turns use_cache off for packing: with a cache, transformers ignores the resets."""
    import torch

    from kubetune_trainer.train import set_kv_cache

    model, tokenizer = tiny
    batch = PackingCollator(tokenizer.pad_token_id, 64)(_examples(10, 8))
    batch.pop(REAL_TOKENS)
    with torch.no_grad():
        isolated = model(**batch).logits
        previous = set_kv_cache(model, True)
        try:
            leaky = model(**batch).logits
        finally:
            set_kv_cache(model, previous)
    assert previous is False
    assert not torch.allclose(isolated[0, 10:], leaky[0, 10:])


def test_a_packed_tiny_run_learns(tmp_path: Path, tiny_model_dir: Path, make_input, loss_curve) -> None:
    from kubetune_trainer.train import train

    job = make_input(
        str(tiny_model_dir),
        str(tmp_path / "out"),
        training={
            "maxSteps": 30,
            "learningRate": 1e-2,
            "batchSize": 8,
            "maxSeqLength": 64,
            "packing": True,
            "seed": 1,
        },
    )
    metrics = train(job, tmp_path / "work", loss_curve)
    assert metrics["steps"] == 30
    loss_curve.assert_falls(0.92)  # as the unpacked tiny run: about 7.4 -> 6.6
    assert metrics["evalLoss"] is not None
    # Real tokens only: 30 steps of 8 examples, none longer than 64 tokens, padding not counted.
    assert 0 < metrics["tokensSeen"] <= 30 * 8 * 64
    assert metrics["tokensPerSecond"] > 0
    config = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"]

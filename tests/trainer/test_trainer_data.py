from __future__ import annotations

from pathlib import Path

import pytest

from kubetune_api import DatasetSpec
from kubetune_trainer.data import CausalLMCollator, read_jsonl, render, split_prompt, split_rows, tokenize
from kubetune_trainer.errors import ExitCode, TrainerError

TEMPLATE = "Phrase: {phrase}\nTone: {tone}"


def test_render_fills_placeholders() -> None:
    assert render(TEMPLATE, {"phrase": "Nice!", "tone": "positive"}, 1) == "Phrase: Nice!\nTone: positive"


def test_render_missing_field_names_field_and_row() -> None:
    with pytest.raises(TrainerError) as info:
        render(TEMPLATE, {"phrase": "Nice!"}, 7)
    assert info.value.exit_code == ExitCode.DATA
    assert "row 7" in info.value.message and "'tone'" in info.value.message


def test_render_keeps_braces_in_values() -> None:
    assert render("{a}", {"a": "{not a field}"}, 1) == "{not a field}"


def test_split_prompt_leaves_the_space_before_the_answer_to_the_model() -> None:
    prompt, answer = split_prompt(TEMPLATE, "tone", {"phrase": "Nice!", "tone": "positive"}, 1)
    assert prompt == "Phrase: Nice!\nTone:"
    assert answer == "positive"


def test_read_jsonl_reports_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{oops\n')
    with pytest.raises(TrainerError, match="line 3") as info:
        read_jsonl(path)
    assert info.value.exit_code == ExitCode.DATA


def test_tone_dataset_shape(tone_dir: Path) -> None:
    train, held_out = read_jsonl(tone_dir / "train.jsonl"), read_jsonl(tone_dir / "eval.jsonl")
    assert 220 <= len(train) <= 260 and 35 <= len(held_out) <= 45
    assert {r["tone"] for r in train} == {r["tone"] for r in held_out} == {"positive", "negative", "neutral"}
    assert not {r["phrase"] for r in train} & {r["phrase"] for r in held_out}


def spec(**kwargs: object) -> DatasetSpec:
    return DatasetSpec(train_uri="/data/t.jsonl", text_template="{x}", **kwargs)


def test_split_rows_holds_out_eval_ratio_deterministically() -> None:
    rows = [{"x": i} for i in range(20)]
    a, b = split_rows(spec(eval_ratio=0.25), rows, None), split_rows(spec(eval_ratio=0.25), rows, None)
    assert len(a.eval) == 5 and len(a.train) == 15 and a == b
    assert not {r["x"] for r in a.eval} & {r["x"] for r in a.train}


def test_split_rows_uses_eval_file_and_caps_samples() -> None:
    rows = [{"x": i} for i in range(20)]
    splits = split_rows(spec(max_samples=4), rows, [{"x": 99}])
    assert len(splits.train) == 4 and splits.eval == [{"x": 99}]


def test_tokenize_appends_eos_and_collator_masks_padding_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = tokenize(["short", "a somewhat longer text"], tokenizer, max_length=64)
    assert all(e["input_ids"][-1] == tokenizer.eos_token_id for e in examples)
    batch = CausalLMCollator(tokenizer.pad_token_id)(examples)
    n0 = len(examples[0]["input_ids"])
    assert batch["attention_mask"][0].sum() == n0
    assert (batch["labels"][0, :n0] == batch["input_ids"][0, :n0]).all()
    assert (batch["labels"][0, n0:] == -100).all()
    assert (batch["labels"][1] != -100).all()

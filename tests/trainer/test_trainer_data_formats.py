"""Dataset file types (JSONL, JSON, CSV, Parquet, gzipped) by formats (text, chat, promptCompletion)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from kubetune_api import DatasetSpec
from kubetune_trainer.data import (
    IGNORE,
    CausalLMCollator,
    encode_rows,
    prompt_answer,
    read_rows,
    resolve_format,
    split_rows,
    validate_rows,
)
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.storage import Storage

REPO = Path(__file__).resolve().parents[2]
CHAT_FILE = REPO / "examples" / "data" / "chat" / "train.jsonl"

TONE = [("I love it.", "positive"), ("This is awful.", "negative"), ("It is Tuesday.", "neutral")] * 4
TEXT_ROWS = [{"phrase": p, "tone": t} for p, t in TONE]
PC_ROWS = [{"prompt": f"Phrase: {p}\nTone:", "completion": f" {t}"} for p, t in TONE]
CHAT_ROWS = [
    {
        "messages": [
            {"role": "user", "content": f"Tone of: {p}"},
            {"role": "assistant", "content": t},
        ]
    }
    for p, t in TONE
]
ROWS = {"text": TEXT_ROWS, "promptCompletion": PC_ROWS, "chat": CHAT_ROWS}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if name.endswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    elif name.endswith(".json"):
        text = json.dumps(rows)
    else:
        lines: list[str] = []
        writer = csv.DictWriter(_Lines(lines), fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text = "".join(lines)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, line: str) -> None:
        self.lines.append(line)


def data_error(call: Any, *args: Any) -> str:
    with pytest.raises(TrainerError) as info:
        call(*args)
    assert info.value.exit_code == ExitCode.DATA
    return info.value.message


def spec(**kwargs: Any) -> DatasetSpec:
    return DatasetSpec(**{"train_uri": "/data/train.jsonl", **kwargs})


def load(path: Path, dataset: DatasetSpec) -> tuple[str, list[dict[str, Any]]]:
    rows = read_rows(path)
    fmt = resolve_format(dataset, rows, path.name)
    validate_rows(dataset, fmt, rows, path.name)
    return fmt, rows


EXTENSIONS = [".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz", ".json.gz", ".csv.gz"]


# CSV cells are strings, so a CSV file cannot hold a chat `messages` list (see the next test).
FILE_FORMATS = [
    (ext, fmt)
    for ext in EXTENSIONS
    for fmt in ("text", "promptCompletion", "chat")
    if not (fmt == "chat" and ".csv" in ext)
]


@pytest.mark.parametrize(("ext", "fmt"), FILE_FORMATS)
def test_every_file_type_reads_every_format(tmp_path: Path, ext: str, fmt: str) -> None:
    path = write(tmp_path / f"train{ext}", ROWS[fmt])
    dataset = spec(text_template="Phrase: {phrase}\nTone: {tone}") if fmt == "text" else spec()
    detected, rows = load(path, dataset)
    assert detected == fmt
    assert rows == ROWS[fmt]


def test_csv_chat_is_not_mistaken_for_text(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.csv", [{"messages": json.dumps(CHAT_ROWS[0]["messages"])}])
    assert "messages' must be a non-empty list" in data_error(load, path, spec(format="chat"))
    assert "cannot detect the format" in data_error(load, path, spec())


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("train.txt", b"hello", "train.txt: unknown file type"),
        ("train.parquet.gz", b"x", "train.parquet.gz: unknown file type"),
        ("train.parquet", b"not parquet", "train.parquet as Parquet"),
        ("train.json", b'{"data": []}', "train.json: a .json dataset must be a top-level list"),
        ("train.json", b'[{"a": 1}, 2]', "train.json row 2: expected a JSON object"),
        ("train.json", b"[", "train.json: invalid JSON"),
        ("train.json", b"[]", "dataset train.json has no rows"),
        ("train.jsonl", b"\n\n", "dataset train.jsonl has no rows"),
        ("train.csv", b"a,b\n", "dataset train.csv has no rows"),
        ("train.csv", b"a,b\n1,2,3\n", "train.csv row 1: more values than header columns"),
        ("train.csv", b"a,\n1,2\n", "empty column name"),
        ("train.jsonl.gz", b"not gzip", "cannot read dataset train.jsonl.gz"),
    ],
    ids=[
        "unknown",
        "gz-parquet",
        "bad-parquet",
        "json-object",
        "json-non-object",
        "bad-json",
        "empty-json",
        "empty-jsonl",
        "empty-csv",
        "csv-extra",
        "csv-header",
        "bad-gzip",
    ],
)
def test_bad_files_are_data_errors_naming_the_file(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert expected in data_error(read_rows, path)


def test_empty_parquet_is_a_data_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "e.parquet")
    assert "has no rows" in data_error(read_rows, tmp_path / "e.parquet")


@pytest.mark.parametrize(
    ("dataset", "rows", "expected"),
    [
        (spec(), [*PC_ROWS[:2], {"prompt": "x"}], "train.jsonl: row 3: rows of mixed formats"),
        (spec(), [*CHAT_ROWS[:2], PC_ROWS[0]], "row 3: rows of mixed formats: this row is promptCompletion"),
        (spec(), [{"phrase": "x", "tone": "y"}], "row 1: cannot detect the format"),
        (spec(format="chat"), PC_ROWS, "row 1: missing field 'messages' required by format chat"),
        (
            spec(format="promptCompletion"),
            [*PC_ROWS[:3], {"prompt": "x"}],
            "row 4: missing field 'completion'",
        ),
        (
            spec(format="promptCompletion"),
            [{"prompt": "x", "completion": None}],
            "field 'completion' is null",
        ),
        (spec(format="promptCompletion"), CHAT_ROWS, "row 1: missing field 'prompt'"),
        (
            spec(text_template="{phrase} {tone}"),
            [*TEXT_ROWS[:4], {"phrase": "x"}],
            "row 5: missing field 'tone'",
        ),
        (
            spec(),
            [{"messages": [{"role": "user", "content": "hi"}]}],
            "row 1: messages has no assistant turn",
        ),
        (spec(), [{"messages": [{"role": "user"}]}], "messages[0] needs a string 'content'"),
        (spec(format="chat"), [{"messages": []}], "must be a non-empty list"),
    ],
    ids=[
        "mixed-pc-text",
        "mixed-chat-pc",
        "undetectable",
        "chat-mismatch",
        "pc-missing",
        "pc-null",
        "pc-mismatch",
        "text-missing",
        "chat-no-assistant",
        "chat-bad-message",
        "chat-empty",
    ],
)
def test_row_errors_name_the_file_field_and_row(
    dataset: DatasetSpec, rows: list[dict[str, Any]], expected: str
) -> None:
    def check() -> None:
        fmt = resolve_format(dataset, rows, "train.jsonl")
        validate_rows(dataset, fmt, rows, "train.jsonl")

    message = data_error(check)
    assert message.startswith("train.jsonl") and expected in message, message


def test_format_text_without_a_template_reads_each_rows_text_field(tmp_path: Path) -> None:
    """The API's textTemplate is optional for format text: each row's `text` field is the example."""
    path = write(tmp_path / "train.jsonl", [{"text": "hello"}, {"text": "world"}])
    assert load(path, spec(format="text")) == ("text", [{"text": "hello"}, {"text": "world"}])
    bad = write(tmp_path / "bad.jsonl", [{"text": "hello"}, {"body": "no text"}])
    message = data_error(load, bad, spec(format="text"))
    assert message.startswith("bad.jsonl") and "row 2" in message and "'text'" in message


@pytest.mark.parametrize("fmt", ["text", "promptCompletion", "chat"])
def test_eval_split_and_max_samples_work_for_every_format(fmt: str) -> None:
    splits = split_rows(spec(eval_ratio=0.25, max_samples=5), ROWS[fmt], None)
    assert len(splits.eval) == 3 and len(splits.train) == 5
    assert all(r in ROWS[fmt] for r in splits.train + splits.eval)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_completion_labels_mask_the_prompt(tokenizer: Any) -> None:
    [example] = encode_rows(spec(), "promptCompletion", PC_ROWS[:1], tokenizer, 64)
    prompt_ids = tokenizer("Phrase: I love it.\nTone:", add_special_tokens=True)["input_ids"]
    completion_ids = tokenizer(" positive", add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == [*prompt_ids, *completion_ids, tokenizer.eos_token_id]
    n = len(prompt_ids)
    assert example["labels"] == [IGNORE] * n + example["input_ids"][n:]


def test_prompt_completion_truncation_keeps_eos_learned(tokenizer: Any) -> None:
    rows = [{"prompt": "word " * 100, "completion": " end"}]
    [example] = encode_rows(spec(), "promptCompletion", rows, tokenizer, 16)
    assert len(example["input_ids"]) == 16
    assert example["labels"][:-1] == [IGNORE] * 15 and example["labels"][-1] == tokenizer.eos_token_id


def test_chat_labels_cover_assistant_turns_only(tokenizer: Any) -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tone of: I love it."},
            {"role": "assistant", "content": "positive"},
            {"role": "user", "content": "And: This is awful."},
            {"role": "assistant", "content": "negative"},
        ]
    }
    [example] = encode_rows(spec(), "chat", [row], tokenizer, 256)
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert example["input_ids"] == tokenizer(text, add_special_tokens=True)["input_ids"]
    learned = tokenizer.decode(
        [t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE]
    )
    # Each assistant turn with its end-of-turn markup; nothing of the system or user turns.
    assert learned == "positive<|im_end|>\nnegative<|im_end|>\n"
    assert all(
        label in (IGNORE, token) for token, label in zip(example["input_ids"], example["labels"], strict=True)
    )


def test_chat_needs_a_chat_template(tokenizer: Any) -> None:
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    message = data_error(encode_rows, spec(), "chat", CHAT_ROWS[:1], plain, 64)
    assert "chat template" in message


def test_collator_keeps_example_labels_and_masks_padding(tokenizer: Any) -> None:
    examples = encode_rows(spec(), "promptCompletion", PC_ROWS[:2], tokenizer, 64)
    batch = CausalLMCollator(tokenizer.pad_token_id)(examples)
    for i, example in enumerate(examples):
        n = len(example["input_ids"])
        assert batch["labels"][i, :n].tolist() == example["labels"]
        assert (batch["labels"][i, n:] == IGNORE).all()


def test_generation_prompts_per_format(tokenizer: Any) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    prompt, answer = prompt_answer(spec(), "chat", tokenizer, row, 1)
    assert answer == "d"
    assert prompt == tokenizer.apply_chat_template(
        row["messages"][:3], tokenize=False, add_generation_prompt=True
    )
    assert prompt_answer(spec(), "promptCompletion", tokenizer, PC_ROWS[0], 1) == (
        "Phrase: I love it.\nTone:",
        " positive",
    )
    text = spec(text_template="Phrase: {phrase}\nTone: {tone}")
    assert prompt_answer(text, "text", tokenizer, TEXT_ROWS[0], 1) == (
        "Phrase: I love it.\nTone:",
        "positive",
    )


def test_fetch_dataset_checks_the_eval_file_against_the_train_format(tmp_path: Path) -> None:
    from kubetune_trainer.train import fetch_dataset

    train = write(tmp_path / "train.parquet", PC_ROWS)
    good = write(tmp_path / "eval.json", PC_ROWS[:2])
    data = fetch_dataset(spec(train_uri=str(train), eval_uri=str(good)), Storage(), tmp_path)
    assert data.format == "promptCompletion" and data.splits.eval == PC_ROWS[:2]
    assert set(data.sha256) == {"train", "eval"}
    bad = write(tmp_path / "eval.jsonl", CHAT_ROWS[:2])
    message = data_error(fetch_dataset, spec(train_uri=str(train), eval_uri=str(bad)), Storage(), tmp_path)
    assert message.startswith("eval.jsonl: row 1: rows of mixed formats")


# --- short tiny-model runs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train_file", "accuracy"),
    [("chat", "evalAccuracyAfter"), ("promptCompletion", "evalAccuracyAfter")],
    ids=["chat", "promptCompletion"],
)
def test_tiny_training_lowers_the_loss(
    tmp_path: Path, tiny_model_dir: Path, make_input: Any, loss_curve: Any, train_file: str, accuracy: str
) -> None:
    from kubetune_trainer.train import train

    if train_file == "chat":
        path = CHAT_FILE
    else:
        rows = [
            {"prompt": f"Phrase: {r['phrase']}\nTone:", "completion": f" {r['tone']}"}
            for r in read_rows(REPO / "examples" / "data" / "tone" / "train.jsonl")[:48]
        ]
        path = write(tmp_path / "train.csv.gz", rows)
    job = make_input(
        str(tiny_model_dir),
        str(tmp_path / "out"),
        dataset={"trainUri": str(path), "evalRatio": 0.1},
        training={"maxSteps": 12, "learningRate": 1e-2, "batchSize": 8, "maxSeqLength": 64},
        # Greedy answers to 2 held-out rows before and after training: evalAccuracyBefore/After.
        evaluation={"scoreBaseModel": True, "samples": 2, "maxNewTokens": 4},
    )
    metrics = train(job, tmp_path / "work", loss_curve)
    loss_curve.assert_falls(0.8)
    assert metrics["steps"] == 12 and metrics["evalLoss"] is not None
    assert metrics[accuracy] is not None and metrics["evalAccuracyBefore"] is not None

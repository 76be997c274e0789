"""Dataset handling: files → rows → a data format → tokenized examples with labels, and the eval split.

File types by extension: .jsonl, .json (a top-level list of objects), .csv (a header row) and
.parquet; .jsonl, .json and .csv may be gzipped (.gz). Formats: text (textTemplate), chat
(`messages`, rendered with the tokenizer's chat template, loss on assistant turns) and
promptCompletion (`prompt` + `completion`, loss on the completion).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kubetune_api.v1alpha1 import DatasetSpec, template_fields
from kubetune_trainer.errors import TrainerError, data_error

log = logging.getLogger("kubetune_trainer.data")

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

Row = dict[str, Any]
Format = Literal["text", "chat", "promptCompletion"]
Example = dict[str, list[int]]

FILE_TYPES = (".jsonl", ".json", ".csv", ".parquet")
# Label of tokens the loss ignores (the prompt part, padding).
IGNORE = -100


def file_type(path: Path) -> tuple[str, bool]:
    """(extension, gzipped) of a dataset file; an unknown type is a data error naming the file."""
    name = Path(path).name.lower()
    gzipped = name.endswith(".gz")
    stem = name.removesuffix(".gz")
    for ext in FILE_TYPES:
        if stem.endswith(ext) and not (gzipped and ext == ".parquet"):
            return ext, gzipped
    raise data_error(
        f"dataset {Path(path).name}: unknown file type; use .jsonl, .json, .csv or .parquet "
        "(.jsonl, .json and .csv may be .gz)"
    )


def read_rows(path: Path) -> list[Row]:
    """The rows of a dataset file, by its extension; row N (1-based) is the N-th record."""
    path = Path(path)
    ext, gzipped = file_type(path)
    if ext == ".parquet":
        rows = _read_parquet(path)
    else:
        try:
            raw = path.read_bytes()
            text = (gzip.decompress(raw) if gzipped else raw).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise data_error(f"cannot read dataset {path.name}: {exc}") from exc
        reader = {".jsonl": _parse_jsonl, ".json": _parse_json, ".csv": _parse_csv}[ext]
        rows = reader(text, path.name)
    if not rows:
        raise data_error(f"dataset {path.name} has no rows")
    return rows


def read_jsonl(path: Path) -> list[Row]:
    """The JSON objects of a JSONL file; blank lines are skipped, so row N is the N-th object."""
    return read_rows(path)


def _parse_jsonl(text: str, name: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise data_error(f"{name} line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise data_error(f"{name} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def _parse_json(text: str, name: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise data_error(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if not isinstance(data, list):
        raise data_error(
            f"{name}: a .json dataset must be a top-level list of objects, got {type(data).__name__}"
        )
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise data_error(f"{name} row {number}: expected a JSON object, got {type(row).__name__}")
    return data


def _parse_csv(text: str, name: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="\0extra")
    rows: list[Row] = []
    try:
        if reader.fieldnames is not None and any(not f for f in reader.fieldnames):
            raise data_error(f"{name}: the CSV header row has an empty column name")
        for number, row in enumerate(reader, start=1):
            if "\0extra" in row:
                raise data_error(f"{name} row {number}: more values than header columns")
            rows.append(row)
    except csv.Error as exc:
        raise data_error(f"{name} line {reader.line_num}: bad CSV: {exc}") from exc
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except Exception as exc:  # pyarrow raises several types (ArrowInvalid, OSError, ...)
        raise data_error(f"cannot read dataset {path.name} as Parquet: {exc}") from exc


# --- formats -------------------------------------------------------------------------------------


def row_format(row: Row) -> Format:
    """What a row looks like: a `messages` list is chat, `prompt` + `completion` promptCompletion."""
    if isinstance(row.get("messages"), list):
        return "chat"
    if "prompt" in row and "completion" in row:
        return "promptCompletion"
    return "text"


def resolve_format(spec: DatasetSpec, rows: list[Row], source: str) -> Format:
    """The dataset's format: explicit, text with a textTemplate, else detected from the first row."""
    if spec.format != "auto":
        return spec.format
    if spec.template is not None:
        return "text"
    detected = row_format(rows[0])
    if detected == "text":
        raise data_error(
            f"{source} row 1: cannot detect the format: no 'messages' list and no 'prompt' + 'completion' "
            f"fields (row has: {_fields(rows[0])}); set dataset.textTemplate for text data"
        )
    return detected


def validate_rows(spec: DatasetSpec, fmt: Format, rows: list[Row], source: str) -> None:
    """Check every row before shuffling, so errors name the file and the row (1-based) in it."""
    for number, row in enumerate(rows, start=1):
        try:
            if fmt == "text":
                assert spec.template is not None  # the API and resolve_format guarantee it
                render(spec.template, row, number)
                continue
            if spec.format == "auto" and row_format(row) != fmt:
                raise data_error(
                    f"row {number}: rows of mixed formats: this row is {row_format(row)} "
                    f"but the dataset is {fmt} (fields: {_fields(row)})"
                )
            if fmt == "chat":
                chat_messages(row, number)
            else:
                prompt_completion(row, number)
        except TrainerError as exc:
            raise data_error(f"{source}: {exc.message}") from exc


def _fields(row: Row) -> str:
    return ", ".join(sorted(row)) or "no fields"


def _field(row: Row, name: str, row_number: int, fmt: str) -> str:
    if name not in row:
        raise data_error(
            f"row {row_number}: missing field {name!r} required by format {fmt} (row has: {_fields(row)})"
        )
    if row[name] is None:
        raise data_error(f"row {row_number}: field {name!r} is null")
    return str(row[name])


def prompt_completion(row: Row, row_number: int) -> tuple[str, str]:
    return (
        _field(row, "prompt", row_number, "promptCompletion"),
        _field(row, "completion", row_number, "promptCompletion"),
    )


def chat_messages(row: Row, row_number: int) -> list[dict[str, str]]:
    """A row's messages, checked: a list of {role, content} with at least one assistant turn."""
    if "messages" not in row:
        raise data_error(
            f"row {row_number}: missing field 'messages' required by format chat (row has: {_fields(row)})"
        )
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise data_error(f"row {row_number}: field 'messages' must be a non-empty list of {{role, content}}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise data_error(f"row {row_number}: messages[{i}] is not an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise data_error(f"row {row_number}: messages[{i}] needs a string {key!r}")
        checked.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" for m in checked):
        raise data_error(f"row {row_number}: messages has no assistant turn to learn from")
    return checked


def chat_template_of(tokenizer: PreTrainedTokenizerBase) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise data_error("format chat needs a tokenizer with a chat template; this base model's has none")


def _chat_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], generation: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation))


def chat_prompt(tokenizer: PreTrainedTokenizerBase, row: Row, row_number: int) -> tuple[str, str]:
    """The conversation up to its last assistant turn (with the generation prompt) and that turn."""
    chat_template_of(tokenizer)
    messages = chat_messages(row, row_number)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return _chat_text(tokenizer, messages[:last], generation=True), messages[last]["content"]


def render(template: str, row: Row, row_number: int) -> str:
    """Fill `{field}` placeholders from a row; `row_number` (1-based) names the row in errors."""
    for name in template_fields(template):
        if name not in row:
            raise data_error(
                f"row {row_number}: missing field {name!r} required by the text template "
                f"(row has: {', '.join(sorted(row)) or 'no fields'})"
            )
        if row[name] is None:
            raise data_error(f"row {row_number}: field {name!r} is null")
    return template.format_map(row)


def split_prompt(template: str, answer_field: str, row: Row, row_number: int) -> tuple[str, str]:
    """The prompt (template rendered up to the answer's placeholder) and the expected answer."""
    prefix = ""
    for literal, name, spec, conversion in string.Formatter().parse(template):
        prefix += literal
        if name == answer_field:
            # "Tone: {tone}" trains on "Tone:" + " positive"; a prompt ending in the space would
            # split that token differently from training, so leave the space to the model.
            prompt = render(prefix.rstrip(" \t"), row, row_number)
            return prompt, render(f"{{{answer_field}}}", row, row_number)
        if name is not None:
            prefix += (
                "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            )
    raise data_error(f"field {answer_field!r} is not in the text template")


def prompt_answer(
    spec: DatasetSpec, fmt: Format, tokenizer: PreTrainedTokenizerBase, row: Row, row_number: int
) -> tuple[str, str]:
    """A held-out row as a generation prompt and its expected answer, in the row's format."""
    if fmt == "chat":
        return chat_prompt(tokenizer, row, row_number)
    if fmt == "promptCompletion":
        return prompt_completion(row, row_number)
    assert spec.template is not None and spec.answer_field is not None
    return split_prompt(spec.template, spec.answer_field, row, row_number)


@dataclass(frozen=True)
class Splits:
    train: list[Row]
    eval: list[Row]


def split_rows(spec: DatasetSpec, train_rows: list[Row], eval_rows: list[Row] | None) -> Splits:
    """Shuffle with the dataset seed, hold out evalRatio when no eval file is given, cap maxSamples."""
    rng = random.Random(spec.seed)
    train = list(train_rows)
    rng.shuffle(train)
    if eval_rows is None:
        # Without evalRatio (and without an eval file) no row is held out, as the API documents.
        ratio = spec.eval_ratio or 0.0
        n_eval = round(len(train) * ratio)
        if ratio > 0 and n_eval == 0 and len(train) > 1:
            n_eval = 1
        eval_rows, train = train[:n_eval], train[n_eval:]
    if spec.max_samples is not None:
        train = train[: spec.max_samples]
    if not train:
        raise data_error("no training rows left after the eval split")
    return Splits(train=train, eval=list(eval_rows))


def sample_rows(rows: list[Row], n: int, seed: int) -> list[Row]:
    """At most n rows drawn with the dataset seed, in their file order; all of them when fewer. The
    first n rows of a file are often no fair sample (files are sorted by label more often than not)."""
    if len(rows) <= n:
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in picked]


def render_all(template: str, rows: list[Row]) -> list[str]:
    return [render(template, row, i) for i, row in enumerate(rows, start=1)]


def tokenize(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[dict[str, list[int]]]:
    """Token ids per text, ending in EOS so the model learns where an answer stops (loss on all)."""
    return [_with_eos(_ids(tokenizer, text, max_length - 1), tokenizer) for text in texts]


def _ids(tokenizer: PreTrainedTokenizerBase, text: str, max_length: int, special: bool = True) -> list[int]:
    # add_special_tokens as in generation.encode, so prompts match the training tokenization.
    return list(
        tokenizer(text, add_special_tokens=special, truncation=True, max_length=max_length)["input_ids"]
    )


def _with_eos(ids: list[int], tokenizer: PreTrainedTokenizerBase) -> Example:
    eos = tokenizer.eos_token_id
    return {"input_ids": [*ids, eos] if eos is not None else ids}


def encode_rows(
    spec: DatasetSpec, fmt: Format, rows: list[Row], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Example]:
    """Training examples: input_ids, and labels with the prompt part at -100 (chat, promptCompletion)."""
    if fmt == "text":
        assert spec.template is not None
        return tokenize(render_all(spec.template, rows), tokenizer, max_length)
    if fmt == "promptCompletion":
        return [_prompt_completion_example(tokenizer, row, i, max_length) for i, row in enumerate(rows, 1)]
    chat_template_of(tokenizer)
    examples = [_chat_example(tokenizer, chat_messages(row, i), max_length) for i, row in enumerate(rows, 1)]
    kept = [e for e in examples if any(label != IGNORE for label in e["labels"])]
    if len(kept) < len(examples):
        log.warning(
            "%d of %d chat rows have no assistant token within maxSeqLength %d; skipped",
            len(examples) - len(kept),
            len(examples),
            max_length,
        )
    if examples and not kept:
        raise data_error(f"no chat row has an assistant token within maxSeqLength {max_length}")
    return kept


def _prompt_completion_example(
    tokenizer: PreTrainedTokenizerBase, row: Row, row_number: int, max_length: int
) -> Example:
    # Tokenized apart and concatenated: generation encodes the prompt alone, then continues it.
    prompt, completion = prompt_completion(row, row_number)
    prompt_ids = _ids(tokenizer, prompt, max_length)
    completion_ids = _ids(tokenizer, completion, max_length, special=False)
    example = _with_eos([*prompt_ids, *completion_ids][: max_length - 1], tokenizer)
    n_prompt = min(len(prompt_ids), max_length - 1)
    # EOS is always learned, so even a truncated example has a label.
    example["labels"] = [IGNORE] * n_prompt + example["input_ids"][n_prompt:]
    return example


def _assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], text: str
) -> list[tuple[int, int]] | None:
    """Character spans of the assistant turns in the rendered conversation (with their end-of-turn
    markup); None when the template does not render conversations as growing prefixes."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        try:
            before = _chat_text(tokenizer, messages[:i], generation=True) if i else ""
        except Exception:  # a template that refuses a conversation not starting with a user turn
            return None
        through = _chat_text(tokenizer, messages[: i + 1], generation=False)
        if not (text.startswith(through) and through.startswith(before)):
            return None
        spans.append((len(before), len(through)))
    return spans


def _chat_example(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], max_length: int
) -> Example:
    text = _chat_text(tokenizer, messages, generation=False)
    spans = _assistant_spans(tokenizer, messages, text) if tokenizer.is_fast else None
    encoded = tokenizer(
        text,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=spans is not None,
    )
    ids = list(encoded["input_ids"])
    if spans is None:
        # Slow tokenizers and templates that re-render earlier turns: loss on every token.
        return {"input_ids": ids, "labels": list(ids)}
    labels = [
        token if end > start and any(start < b and end > a for a, b in spans) else IGNORE
        for token, (start, end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return {"input_ids": ids, "labels": labels}


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


class PackingCollator:
    """Padding-free batching: a batch's examples are concatenated into rows of at most `max_length`
    tokens (first-fit by decreasing length), with no attention across examples.

    Follows transformers' DataCollatorWithFlattening conventions, per row: `position_ids` restart at 0
    for every example and there is no `attention_mask`, so transformers' masking utilities build a
    block-diagonal causal mask from the position resets (sdpa, eager and flash attention all honour
    it); each example's first label is -100, so no token is trained to predict the next example. Only
    the rows' tails are padded, to the longest row: pad ids continuing the last example's positions
    (they come after it, so a causal mask keeps them from changing it), labels -100.
    """

    def __init__(self, pad_token_id: int, max_length: int) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length

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

        flat_rows = []
        for row in self.rows([e for e in examples if e["input_ids"]]):
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            for example in row:
                own = list(example.get("labels", example["input_ids"]))
                ids += example["input_ids"]
                labels += [IGNORE, *own[1:]]
                positions += range(len(example["input_ids"]))
            flat_rows.append((ids, labels, positions))
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

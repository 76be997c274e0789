"""Rows to training examples in one of three formats: text (textTemplate), chat (`messages`, rendered
with the tokenizer's chat template, loss on the assistant turns) and promptCompletion (`prompt` +
`completion`, loss on the completion); and held-out rows as prompts with their answers."""

from __future__ import annotations

import logging
import string
from typing import TYPE_CHECKING

from kubetune_api.v1alpha1 import DatasetSpec, template_fields
from kubetune_trainer.data.types import IGNORE, Example, Format, Row
from kubetune_trainer.errors import TrainerError, data_error

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("kubetune_trainer.data")


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


def encode_each(
    spec: DatasetSpec, fmt: Format, rows: list[Row], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Example]:
    """One example per row, as training encodes it, without dropping any (chat rows may have no label
    left within max_length: encode_rows skips those)."""
    if fmt == "text":
        assert spec.template is not None
        return tokenize(render_all(spec.template, rows), tokenizer, max_length)
    if fmt == "promptCompletion":
        return [_prompt_completion_example(tokenizer, row, i, max_length) for i, row in enumerate(rows, 1)]
    chat_template_of(tokenizer)
    return [_chat_example(tokenizer, chat_messages(row, i), max_length) for i, row in enumerate(rows, 1)]


def encode_rows(
    spec: DatasetSpec, fmt: Format, rows: list[Row], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[Example]:
    """Training examples: input_ids, and labels with the prompt part at -100 (chat, promptCompletion)."""
    if fmt == "text":
        assert spec.template is not None
        return tokenize(render_all(spec.template, rows), tokenizer, max_length)
    examples = encode_each(spec, fmt, rows, tokenizer, max_length)
    if fmt != "chat":
        return examples
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

"""Dataset handling: JSONL rows → rendered texts → tokenized examples, and the eval split."""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_trainer.config import DatasetSpec, template_fields
from kubetune_trainer.errors import TrainerError, data_error

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

Row = dict[str, Any]


def read_jsonl(path: Path) -> list[Row]:
    """The JSON objects of a JSONL file; blank lines are skipped, so row N is the N-th object."""
    rows: list[Row] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise data_error(f"cannot read dataset {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise data_error(f"{Path(path).name} line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise data_error(
                f"{Path(path).name} line {number}: expected a JSON object, got {type(row).__name__}"
            )
        rows.append(row)
    if not rows:
        raise data_error(f"dataset {path} has no rows")
    return rows


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


def validate_rows(template: str, rows: list[Row], source: str) -> None:
    """Check every row against the template before shuffling, so errors name the row in the file."""
    for number, row in enumerate(rows, start=1):
        try:
            render(template, row, number)
        except TrainerError as exc:
            raise data_error(f"{source}: {exc.message}") from exc


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
        n_eval = round(len(train) * spec.eval_ratio)
        if spec.eval_ratio > 0 and n_eval == 0 and len(train) > 1:
            n_eval = 1
        eval_rows, train = train[:n_eval], train[n_eval:]
    if spec.max_samples is not None:
        train = train[: spec.max_samples]
    if not train:
        raise data_error("no training rows left after the eval split")
    return Splits(train=train, eval=list(eval_rows))


def render_all(template: str, rows: list[Row]) -> list[str]:
    return [render(template, row, i) for i, row in enumerate(rows, start=1)]


def tokenize(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[dict[str, list[int]]]:
    """Token ids per text, ending in EOS so the model learns where an answer stops."""
    eos = tokenizer.eos_token_id
    examples = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_length - 1)[
            "input_ids"
        ]
        if eos is not None:
            ids = [*ids, eos]
        examples.append({"input_ids": ids})
    return examples


class CausalLMCollator:
    """Pads a batch to its longest example; loss covers every real token (padding is masked)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for i, example in enumerate(examples):
            ids = torch.tensor(example["input_ids"], dtype=torch.long)
            input_ids[i, : len(ids)] = ids
            attention_mask[i, : len(ids)] = 1
        # Labels come from the mask, not the pad id: SmolLM2 pads with its EOS token, which must
        # still be learned at the end of each example.
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

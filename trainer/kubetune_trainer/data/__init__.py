"""Dataset handling: files → rows (readers) → examples of a format (formats) → batches (collators),
and the eval split (splits)."""

from __future__ import annotations

from kubetune_trainer.data.collators import (
    EXAMPLE_LENGTHS,
    REAL_TOKENS,
    SHARED_PREFIX,
    CausalLMCollator,
    PackingCollator,
)
from kubetune_trainer.data.formats import (
    chat_messages,
    chat_prompt,
    chat_template_of,
    encode_each,
    encode_rows,
    prompt_answer,
    prompt_completion,
    render,
    render_all,
    resolve_format,
    row_format,
    split_prompt,
    tokenize,
    validate_rows,
)
from kubetune_trainer.data.readers import FILE_TYPES, file_type, read_jsonl, read_rows
from kubetune_trainer.data.splits import Splits, sample_rows, split_rows
from kubetune_trainer.data.types import IGNORE, Example, Format, Row

__all__ = [
    "EXAMPLE_LENGTHS",
    "FILE_TYPES",
    "IGNORE",
    "REAL_TOKENS",
    "SHARED_PREFIX",
    "CausalLMCollator",
    "Example",
    "Format",
    "PackingCollator",
    "Row",
    "Splits",
    "chat_messages",
    "chat_prompt",
    "chat_template_of",
    "encode_each",
    "encode_rows",
    "file_type",
    "prompt_answer",
    "prompt_completion",
    "read_jsonl",
    "read_rows",
    "render",
    "render_all",
    "resolve_format",
    "row_format",
    "sample_rows",
    "split_prompt",
    "split_rows",
    "tokenize",
    "validate_rows",
]

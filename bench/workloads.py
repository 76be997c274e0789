"""The two training workloads of bench/throughput.py, as rows every case reads the same way.

- tone: examples/data/tone/train.jsonl rendered with "Phrase: {phrase}\\nTone: {tone}"; every token is
  trained (about 16 tokens a row with SmolLM2's tokenizer).
- chat: the same rows as conversations with a long system prompt (over 60 tokens) and a one-word
  assistant answer, trained with assistant-only loss: most tokens carry no label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TONE_FILE = REPO / "examples" / "data" / "tone" / "train.jsonl"
TONE_EVAL_FILE = REPO / "examples" / "data" / "tone" / "eval.jsonl"
TEMPLATE = "Phrase: {phrase}\nTone: {tone}"
SYSTEM_PROMPT = (
    "You are the tone classifier of a customer support team. Each message you receive is a short phrase "
    "that a customer wrote to us by email, chat or phone. Read it carefully and decide which single tone "
    "best describes how the customer feels. Answer with the tone only, one lower-case word, and never add "
    "explanations, punctuation, greetings or any other text before or after it."
)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    rows: list[dict[str, Any]]
    # tone: a text template over each row; chat: a "messages" list per row.
    template: str | None

    def write_jsonl(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
        return path

    def prompt_completion_rows(self) -> list[dict[str, Any]]:
        """Conversational prompt/completion rows (TRL's completion-only format) of the chat workload."""
        return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in self.rows]


def tone_rows(path: Path = TONE_FILE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def as_chats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tone rows as the chat workload's conversations: the system prompt, the phrase, the tone."""
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": row["phrase"]},
                {"role": "assistant", "content": row["tone"]},
            ]
        }
        for row in rows
    ]


def load(name: str, path: Path = TONE_FILE) -> Workload:
    """A workload over the tone rows of `path` (the training rows by default)."""
    rows = tone_rows(path)
    if name == "tone":
        return Workload("tone", "tone rows, text template, loss on every token", rows, TEMPLATE)
    if name == "chat":
        description = "long system prompt, one-word answer, assistant-only loss"
        return Workload("chat", description, as_chats(rows), None)
    raise ValueError(f"unknown workload {name!r}")


WORKLOADS = ("tone", "chat")

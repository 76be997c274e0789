"""The shapes data takes between the files and the model."""

from __future__ import annotations

from typing import Any, Literal

Row = dict[str, Any]
Format = Literal["text", "chat", "promptCompletion"]
Example = dict[str, list[int]]
# Label of tokens the loss ignores (the prompt part, padding).
IGNORE = -100

"""PyTorch-vs-ONNX parity: the same held-out prompts generated greedily by both, compared token by
token and scored against the rows' answers."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubetune_api import TrainerInput
from kubetune_trainer.data import Format, sample_rows
from kubetune_trainer.onnx_build import SwappableAdapter


@dataclass(frozen=True)
class ParityReport:
    prompts: int
    first_n_tokens: int
    parity: float
    accuracy_torch: float | None
    accuracy_onnx: float | None
    tokenizer_agreement: float
    onnx_seconds: float
    torch_seconds: float
    # With a swappable adapter: its outputs against the merged ONNX model's, and its accuracy.
    adapter_parity: float | None = None
    accuracy_onnx_adapter: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def check_parity(
    job: TrainerInput,
    model: Any,
    tokenizer: Any,
    onnx_dir: Path,
    rows: list[dict],
    swappable: SwappableAdapter | None = None,
    data_format: Format = "text",
) -> ParityReport:
    """Greedy-generate held-out prompts with PyTorch and ONNX Runtime GenAI and compare."""
    from kubetune_trainer.generation import (
        accuracy,
        answer_text,
        encode,
        eos_ids,
        ort_greedy,
        ort_tokenizer_agreement,
        parity,
        prompts_from_rows,
        torch_greedy,
    )

    spec, eos = job.spec.export, eos_ids(tokenizer, model)
    picked = sample_rows(rows, spec.parity_prompts, job.spec.dataset.seed)
    prompts = prompts_from_rows(job.spec.dataset, data_format, tokenizer, picked)
    ids = [encode(tokenizer, p.text) for p in prompts]
    expected = [p.answer for p in prompts]

    def score(outputs: list[list[int]]) -> float | None:
        return accuracy([answer_text(tokenizer, t) for t in outputs], expected) if prompts else None

    start = time.monotonic()
    torch_out = torch_greedy(model, tokenizer, ids, spec.max_new_tokens)
    torch_seconds = time.monotonic() - start
    start = time.monotonic()
    onnx_out = ort_greedy(onnx_dir, ids, spec.max_new_tokens, eos)
    onnx_seconds = time.monotonic() - start
    adapter_out = None
    if swappable is not None:
        adapter_out = ort_greedy(swappable.model_dir, ids, spec.max_new_tokens, eos, swappable.adapter_file)
    return ParityReport(
        prompts=len(prompts),
        first_n_tokens=spec.parity_tokens,
        parity=parity(torch_out, onnx_out, spec.parity_tokens),
        accuracy_torch=score(torch_out),
        accuracy_onnx=score(onnx_out),
        tokenizer_agreement=ort_tokenizer_agreement(onnx_dir, [p.text for p in prompts], ids),
        onnx_seconds=round(onnx_seconds, 2),
        torch_seconds=round(torch_seconds, 2),
        adapter_parity=parity(onnx_out, adapter_out, spec.parity_tokens) if adapter_out is not None else None,
        accuracy_onnx_adapter=score(adapter_out) if adapter_out is not None else None,
    )

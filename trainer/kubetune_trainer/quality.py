"""How good an exported target is: held-out rows answered greedily by PyTorch (the reference) and by
the ONNX model, scored with the task metrics and compared token by token.

The figures, under their status and gate names:
- exactMatch, and f1 / rougeL when evaluation.metrics lists them: the ONNX model's answers against
  the rows' gold answers (the scorers of evaluation.py, so they read like evalExactMatch);
- parity: the share of prompts whose first parityTokens new tokens equal PyTorch's;
- parityTokenAgreement: the share of those token positions that are equal;
- tokenizerAgreement: the share of prompts onnxruntime-genai's tokenizer encodes like transformers;
- decodeTokensPerSecond: the ONNX model's generated tokens per second over these answers.
A base+adapter pair's figures carry the prefix `adapter` (adapterExactMatch, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubetune_api import TrainerInput
from kubetune_trainer.data import Format, Row, sample_rows
from kubetune_trainer.evaluation import SCORERS
from kubetune_trainer.generation import (
    Prompt,
    answer_text,
    encode,
    eos_ids,
    ort_greedy,
    ort_model,
    ort_tokenizer_agreement,
    parity,
    prompts_from_rows,
    torch_greedy,
)


@dataclass(frozen=True)
class HeldOut:
    """The rows every target is measured on, and PyTorch's answers to them."""

    prompts: list[Prompt]
    prompt_ids: list[list[int]]
    torch_tokens: list[list[int]]
    torch_metrics: dict[str, float]
    eos: set[int]
    tokenizer: Any


def token_agreement(reference: list[list[int]], other: list[list[int]], first_n: int) -> float:
    """Equal tokens at equal positions over the first `first_n` of each reference answer; a missing
    token (the other answer ended sooner) counts as unequal."""
    compared = equal = 0
    for ref, out in zip(reference, other, strict=True):
        ref = ref[:first_n]
        compared += len(ref)
        equal += sum(1 for i, token in enumerate(ref) if i < len(out) and out[i] == token)
    return equal / compared if compared else 1.0


def scores(
    job: TrainerInput, tokenizer: Any, tokens: list[list[int]], prompts: list[Prompt]
) -> dict[str, float]:
    """exactMatch always, and the task metrics evaluation.metrics asks for."""
    wanted = ["exactMatch", *(m for m in (job.spec.evaluation.metrics if job.spec.evaluation else []))]
    answers = [answer_text(tokenizer, t) for t in tokens]
    golds = [p.answer for p in prompts]
    return {name: SCORERS[name](answers, golds) for name in dict.fromkeys(wanted)}


def held_out(job: TrainerInput, model: Any, tokenizer: Any, rows: list[Row], data_format: Format) -> HeldOut:
    """PyTorch's answers to up to export.evalSamples rows, drawn with the dataset seed."""
    spec = job.spec.export
    picked = sample_rows(rows, spec.eval_samples, job.spec.dataset.seed)
    prompts = prompts_from_rows(job.spec.dataset, data_format, tokenizer, picked)
    ids = [encode(tokenizer, p.text) for p in prompts]
    tokens = torch_greedy(model, tokenizer, ids, spec.max_new_tokens)
    metrics = scores(job, tokenizer, tokens, prompts) if prompts else {}
    return HeldOut(prompts, ids, tokens, metrics, eos_ids(tokenizer, model), tokenizer)


def measure(
    job: TrainerInput, reference: HeldOut, model_dir: Path, adapter_file: Path | None = None
) -> dict[str, float]:
    """One ONNX model's figures on the held-out rows (see the module docstring)."""
    if not reference.prompts:
        return {}
    spec = job.spec.export
    model = ort_model(model_dir)
    start = time.monotonic()
    tokens = ort_greedy(model, reference.prompt_ids, spec.max_new_tokens, reference.eos, adapter_file)
    seconds = time.monotonic() - start
    generated = sum(len(t) for t in tokens)
    return {
        **scores(job, reference.tokenizer, tokens, reference.prompts),
        "parity": parity(reference.torch_tokens, tokens, spec.parity_tokens),
        "parityTokenAgreement": token_agreement(reference.torch_tokens, tokens, spec.parity_tokens),
        "tokenizerAgreement": ort_tokenizer_agreement(
            model, [p.text for p in reference.prompts], reference.prompt_ids
        ),
        "decodeTokensPerSecond": round(generated / seconds, 1) if seconds > 0 else 0.0,
    }


def with_prefix(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    """adapter + exactMatch -> adapterExactMatch."""
    return {prefix + name[0].upper() + name[1:]: value for name, value in metrics.items()}

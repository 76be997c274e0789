"""Greedy generation with PyTorch and with ONNX Runtime GenAI, and the scores built on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubetune_api.v1alpha1 import DatasetSpec
from kubetune_trainer.data import Format, Row, prompt_answer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Prompt:
    text: str
    answer: str


def prompts_from_rows(
    spec: DatasetSpec, fmt: Format, tokenizer: PreTrainedTokenizerBase, rows: list[Row]
) -> list[Prompt]:
    """Held-out rows as prompts: text: the template up to the answer field; chat: the conversation up
    to its last assistant turn; promptCompletion: the prompt. The answer is what follows."""
    return [Prompt(*prompt_answer(spec, fmt, tokenizer, row, i)) for i, row in enumerate(rows, start=1)]


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The same call as for training texts, so prompts match the training tokenization.
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def eos_ids(tokenizer: PreTrainedTokenizerBase, model: Any) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return {i for i in ids if i is not None}


def torch_greedy(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
) -> list[list[int]]:
    """New tokens per prompt, one prompt at a time (no padding, so it compares exactly with ORT)."""
    import torch

    eos = eos_ids(tokenizer, model)
    outputs = []
    model.eval()
    with torch.no_grad():
        for ids in prompt_ids:
            input_ids = torch.tensor([ids])
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(eos),
                pad_token_id=tokenizer.pad_token_id,
            )
            outputs.append(_until_eos(out[0, len(ids) :].tolist(), eos))
    return outputs


def ort_model(model_dir: Path) -> Any:
    """An ONNX Runtime GenAI model, loaded once for every use below."""
    import onnxruntime_genai as og

    return og.Model(str(model_dir))


def ort_greedy(
    model: Any,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    eos: set[int],
    adapter_file: Path | None = None,
) -> list[list[int]]:
    """New tokens per prompt from an ort_model, optionally with a swappable adapter active."""
    import onnxruntime_genai as og

    adapters = None
    if adapter_file is not None:
        adapters = og.Adapters(model)
        adapters.load(str(adapter_file), "adapter")
    outputs = []
    for ids in prompt_ids:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
        generator = og.Generator(model, params)
        if adapters is not None:
            generator.set_active_adapter(adapters, "adapter")
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        outputs.append(_until_eos(list(generator.get_sequence(0))[len(ids) :], eos))
    return outputs


def ort_tokenizer_agreement(model: Any, texts: list[str], expected: list[list[int]]) -> float:
    """Fraction of texts that an ort_model's tokenizer encodes exactly like transformers."""
    import onnxruntime_genai as og

    tokenizer = og.Tokenizer(model)
    same = sum(list(tokenizer.encode(t)) == e for t, e in zip(texts, expected, strict=True))
    return same / len(texts) if texts else 1.0


def _until_eos(tokens: list[int], eos: set[int]) -> list[int]:
    """The tokens before the first EOS; ONNX Runtime GenAI leaves EOS out, transformers keeps it."""
    out = []
    for token in tokens:
        if int(token) in eos:
            break
        out.append(int(token))
    return out


def answer_text(tokenizer: PreTrainedTokenizerBase, new_tokens: list[int]) -> str:
    text = str(tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()
    return text.splitlines()[0].strip() if text else ""


def accuracy(answers: list[str], expected: list[str]) -> float:
    if not expected:
        return 0.0
    return sum(a.strip().lower() == e.strip().lower() for a, e in zip(answers, expected, strict=True)) / len(
        expected
    )


def parity(a: list[list[int]], b: list[list[int]], first_n: int) -> float:
    """Fraction of prompts whose first `first_n` generated tokens are identical."""
    if not a:
        return 1.0
    return sum(x[:first_n] == y[:first_n] for x, y in zip(a, b, strict=True)) / len(a)


def generation_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], max_new_tokens: int
) -> tuple[float, list[str]]:
    ids = [encode(tokenizer, p.text) for p in prompts]
    answers = [answer_text(tokenizer, t) for t in torch_greedy(model, tokenizer, ids, max_new_tokens)]
    return accuracy(answers, [p.answer for p in prompts]), answers

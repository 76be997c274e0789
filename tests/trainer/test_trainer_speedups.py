"""Each training speed-up against the plain path: the same losses over 20 steps (within 1e-3), on the
trainer's own path (spec -> model, data, collator, arguments, KubetuneTrainer) with the tiny Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.data import encode_rows

STEPS = 20
# A long system prompt and a short answer: most positions carry no label (assistant-only loss).
SYSTEM = (
    "You label the tone of a short phrase written by a customer of a large online shop. Read the phrase, "
    "decide whether it sounds positive, negative or neutral, and answer with that one word only, in lower "
    "case, without punctuation, explanation or any other text before or after it."
)
PHRASES = [
    ("thanks so much, this made my day", "positive"),
    ("the parcel arrived broken again", "negative"),
    ("the order number is 4411", "neutral"),
    ("absolutely love the new colour", "positive"),
    ("nobody answered my emails for a week", "negative"),
    ("I will collect it on Monday", "neutral"),
]


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": PHRASES[i % len(PHRASES)][0]},
                {"role": "assistant", "content": PHRASES[i % len(PHRASES)][1]},
            ]
        }
        for i in range(n)
    ]


def losses(spec: Any, model_dir: Path, rows: list[dict[str, Any]], workdir: Path, labeled_only: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.peft_config import to_training_arguments
    from kubetune_trainer.train import data_collator, prepare_model, set_kv_cache

    set_seed(spec.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = prepare_model(spec, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    if spec.training.packing:
        set_kv_cache(model, False)
    fmt = "chat" if "messages" in rows[0] else "text"
    dataset = encode_rows(spec.dataset, fmt, rows, tokenizer, spec.training.max_seq_length)
    head_rows: list[int] = []
    model.get_output_embeddings().register_forward_hook(lambda m, a, out: head_rows.append(a[0].numel() // a[0].shape[-1]))
    trainer = KubetuneTrainer(
        model=model,
        args=to_training_arguments(spec, workdir, False),
        train_dataset=dataset,
        data_collator=data_collator(spec, tokenizer.pad_token_id),
        labeled_positions_only=labeled_only,
    )
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e], head_rows


CASES = {
    "chat-padded": {"format": "chat"},
    "chat-packed": {"format": "chat", "packing": True},
    "chat-accumulated": {"format": "chat", "gradientAccumulationSteps": 2},
    "text-template-packed": {"format": "text", "packing": True},
}


@pytest.mark.parametrize("case", CASES)
def test_the_lm_head_at_labeled_positions_only_keeps_the_losses(
    tmp_path: Path, tiny_model_dir: Path, tone_dir: Path, make_input, case: str
) -> None:
    from kubetune_trainer.data import read_rows

    settings = dict(CASES[case])
    fmt = settings.pop("format")
    if fmt == "chat":
        rows, dataset = chat_rows(48), {"trainUri": "/data/chat.jsonl", "format": "chat"}
    else:
        rows = read_rows(tone_dir / "train.jsonl")
        dataset = {"trainUri": "/data/tone.jsonl", "textTemplate": "Phrase: {phrase}\nTone: {tone}"}
    training = {"maxSteps": STEPS, "batchSize": 4, "learningRate": 1e-3, "maxSeqLength": 512, **settings}
    spec = make_input(str(tiny_model_dir), str(tmp_path / "out"), dataset=dataset, training=training).spec

    plain, plain_rows = losses(spec, tiny_model_dir, rows, tmp_path / "plain", labeled_only=False)
    fast, fast_rows = losses(spec, tiny_model_dir, rows, tmp_path / "fast", labeled_only=True)

    assert len(plain) == len(fast) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) <= 1e-3, (plain, fast)
    assert plain[-1] < plain[0]  # the curve moves, so equal curves mean equal updates
    if fmt == "chat":
        # The head saw only the labeled positions: under a fifth of what the plain path computes.
        assert sum(fast_rows) < 0.2 * sum(plain_rows), (sum(fast_rows), sum(plain_rows))

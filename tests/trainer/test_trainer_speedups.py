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


def losses(
    spec: Any,
    model_dir: Path,
    rows: list[dict[str, Any]],
    workdir: Path,
    shift_rng: bool = False,
    **speedups: bool,
) -> Any:
    """The loss at each step, and how many positions the LM head computed in each forward. shift_rng:
    one random number is drawn before training, so the dropout masks differ and nothing else does."""
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
    model.get_output_embeddings().register_forward_hook(
        lambda m, a, out: head_rows.append(a[0].numel() // a[0].shape[-1])
    )
    trainer = KubetuneTrainer(
        model=model,
        args=to_training_arguments(spec, workdir, False),
        train_dataset=dataset,
        data_collator=data_collator(spec, tokenizer.pad_token_id),
        **speedups,
    )
    if shift_rng:
        torch.rand(1)
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

    plain, plain_rows = losses(spec, tiny_model_dir, rows, tmp_path / "plain", labeled_positions_only=False)
    fast, fast_rows = losses(spec, tiny_model_dir, rows, tmp_path / "fast", labeled_positions_only=True)

    assert len(plain) == len(fast) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) <= 1e-3, (plain, fast)
    assert plain[-1] < plain[0]  # the curve moves, so equal curves mean equal updates
    if fmt == "chat":
        # The head saw only the labeled positions: under a fifth of what the plain path computes.
        assert sum(fast_rows) < 0.2 * sum(plain_rows), (sum(fast_rows), sum(plain_rows))


# --- LoRA dropout masks from NumPy on the CPU ------------------------------------------------------


def test_fast_dropout_keeps_each_input_with_probability_one_minus_p_and_rescales() -> None:
    import torch

    from kubetune_trainer.fast_dropout import FastDropout

    dropout = FastDropout(0.05).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    # 5 standard deviations of a fraction of 10^6 Bernoulli(0.95) draws: 0.0011.
    assert abs(kept.float().mean().item() - 0.95) < 0.0011
    assert torch.all(y[kept] == 1 / 0.95)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the input was kept, scaled alike

    torch.manual_seed(7)
    first = dropout(torch.ones(64, 64))
    second = dropout(torch.ones(64, 64))
    torch.manual_seed(7)
    assert torch.equal(dropout(torch.ones(64, 64)), first)  # torch's seed decides the masks
    assert not torch.equal(first, second)
    assert torch.equal(dropout.eval()(x), x)  # evaluation: no dropout


def test_fast_dropout_replaces_every_lora_dropout(tiny_model_dir: Path, make_input, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer import fast_dropout
    from kubetune_trainer.train import prepare_model

    spec = make_input(str(tiny_model_dir), str(tmp_path), lora={"r": 8, "alpha": 16, "dropout": 0.1}).spec
    model = prepare_model(spec, AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    lora_modules = [m for m in model.modules() if hasattr(m, "lora_dropout")]
    assert fast_dropout.install(model) == len(lora_modules) > 0
    assert all(isinstance(m.lora_dropout["default"], fast_dropout.FastDropout) for m in lora_modules)
    assert all(m.lora_dropout["default"].p == 0.1 for m in lora_modules)


def test_fast_dropout_moves_the_losses_no_more_than_other_dropout_masks_do(
    tmp_path: Path, tiny_model_dir: Path, make_input
) -> None:
    """New masks cannot give the plain path's losses to 1e-3: any change of the random stream moves them.
    So the bound is the plain path's own spread under other masks (the same weights and batches, one
    random number drawn first): a wrong drop rate or scale would move the losses further than that."""
    dataset = {"trainUri": "/data/chat.jsonl", "format": "chat"}
    training = {"maxSteps": STEPS, "batchSize": 4, "learningRate": 1e-3, "maxSeqLength": 512, "packing": True}
    lora = {"r": 8, "alpha": 16, "dropout": 0.1}
    spec = make_input(str(tiny_model_dir), str(tmp_path), dataset=dataset, training=training, lora=lora).spec
    rows = chat_rows(48)

    plain, _ = losses(spec, tiny_model_dir, rows, tmp_path / "plain", fast_dropout=False)
    other_masks, _ = losses(
        spec, tiny_model_dir, rows, tmp_path / "shifted", shift_rng=True, fast_dropout=False
    )
    fast, _ = losses(spec, tiny_model_dir, rows, tmp_path / "fast", fast_dropout=True)

    spread = max(abs(a - b) for a, b in zip(plain, other_masks, strict=True))
    assert spread > 0  # the masks did change
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) <= 2 * spread, (plain, fast, other_masks)
    assert abs(sum(plain) - sum(fast)) / STEPS <= 2 * abs(sum(plain) - sum(other_masks)) / STEPS + 1e-3

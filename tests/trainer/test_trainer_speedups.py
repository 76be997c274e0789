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
    batch_shapes: list[tuple[int, ...]] | None = None,
    **speedups: bool,
) -> Any:
    """The loss at each step, and per forward of the LM head how many positions it saw and how wide its
    output was (the vocabulary, or the hidden size where the fused loss skipped the head's matmul).
    shift_rng: one random number is drawn before training, so the dropout masks differ and nothing else
    does. batch_shapes, when given, receives the shape of each batch's input ids.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.peft_config import to_training_arguments
    from kubetune_trainer.train import data_collator, per_example_rows_for, prepare_model, set_kv_cache

    set_seed(spec.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = prepare_model(spec, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    if spec.training.packing:
        set_kv_cache(model, False)
    fmt = "chat" if "messages" in rows[0] else "text"
    dataset = encode_rows(spec.dataset, fmt, rows, tokenizer, spec.training.max_seq_length)
    head_calls: list[tuple[int, int]] = []
    model.get_output_embeddings().register_forward_hook(
        lambda m, a, out: head_calls.append((a[0].numel() // a[0].shape[-1], out.shape[-1]))
    )
    if batch_shapes is not None:
        model.get_input_embeddings().register_forward_hook(
            lambda m, a, out: batch_shapes.append(tuple(a[0].shape))
        )
    per_example = speedups.pop("per_example_attention", True)
    trainer = KubetuneTrainer(
        model=model,
        args=to_training_arguments(spec, workdir, False),
        train_dataset=dataset,
        data_collator=data_collator(
            spec, tokenizer.pad_token_id, per_example and per_example_rows_for(spec, model)
        ),
        **speedups,
    )
    if shift_rng:
        torch.rand(1)
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e], head_calls


def model_sizes(model_dir: Path) -> tuple[int, int]:
    """The model's hidden size and vocabulary size."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return int(config.hidden_size), int(config.vocab_size)


def case_spec(
    case: dict[str, Any], make_input: Any, model_dir: Path, tone_dir: Path, out: Path, **overrides: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """The tiny run's spec for a case (its data format and training settings) and its rows."""
    from kubetune_trainer.data import read_rows

    settings = dict(case)
    if settings.pop("format") == "chat":
        rows, dataset = chat_rows(48), {"trainUri": "/data/chat.jsonl", "format": "chat"}
    else:
        rows = read_rows(tone_dir / "train.jsonl")
        dataset = {"trainUri": "/data/tone.jsonl", "textTemplate": "Phrase: {phrase}\nTone: {tone}"}
    training = {"maxSteps": STEPS, "batchSize": 4, "learningRate": 1e-3, "maxSeqLength": 512, **settings}
    spec = make_input(str(model_dir), str(out), dataset=dataset, training=training, **overrides).spec
    return spec, rows


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
    fmt = CASES[case]["format"]
    spec, rows = case_spec(CASES[case], make_input, tiny_model_dir, tone_dir, tmp_path / "out")

    plain, plain_rows = losses(spec, tiny_model_dir, rows, tmp_path / "plain", labeled_positions_only=False)
    # The shared prefix (which needs this head) would draw other LoRA dropout masks: it has its own test.
    fast, fast_rows = losses(
        spec, tiny_model_dir, rows, tmp_path / "fast", labeled_positions_only=True, shared_prefix=False
    )

    assert len(plain) == len(fast) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) <= 1e-3, (plain, fast)
    assert plain[-1] < plain[0]  # the curve moves, so equal curves mean equal updates
    if fmt == "chat":
        # The head saw only the labeled positions: under a fifth of what the plain path computes.
        fast_rows, plain_rows = sum(n for n, _ in fast_rows), sum(n for n, _ in plain_rows)
        assert fast_rows < 0.2 * plain_rows, (fast_rows, plain_rows)


# --- The LM head fused with its cross-entropy --------------------------------------------------------

FUSED_CASES = {
    "lora-chat-packed": ({"format": "chat", "packing": True}, {}),
    "lora-text-accumulated": ({"format": "text", "gradientAccumulationSteps": 2}, {}),
    # Full fine-tuning trains the (tied) head weight too: its gradient comes from the fused pass.
    "full-text-packed": ({"format": "text", "packing": True}, {"method": "full", "lora": None}),
}


@pytest.mark.parametrize("case", FUSED_CASES)
def test_the_fused_head_loss_keeps_the_losses(
    tmp_path: Path, tiny_model_dir: Path, tone_dir: Path, make_input, case: str
) -> None:
    settings, overrides = FUSED_CASES[case]
    spec, rows = case_spec(settings, make_input, tiny_model_dir, tone_dir, tmp_path / "out", **overrides)

    plain, plain_calls = losses(spec, tiny_model_dir, rows, tmp_path / "plain", fused_head_loss=False)
    fused, fused_calls = losses(spec, tiny_model_dir, rows, tmp_path / "fused", fused_head_loss=True)

    # The fused run skipped the head's matmul (its output stayed hidden-sized); the plain one did not.
    hidden, vocab = model_sizes(tiny_model_dir)
    assert {width for _, width in fused_calls} == {hidden}, fused_calls
    assert {width for _, width in plain_calls} == {vocab}, plain_calls

    assert len(plain) == len(fused) == STEPS
    assert max(abs(a - b) for a, b in zip(plain, fused, strict=True)) <= 1e-3, (plain, fused)
    assert plain[-1] < plain[0]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("train_weight", [False, True])
def test_head_cross_entropy_sum_equals_the_full_logits_loss_and_its_gradients(
    dtype: str, train_weight: bool
) -> None:
    import torch
    import torch.nn.functional as F

    from kubetune_trainer.fused_head_loss import CHUNK_ROWS, head_cross_entropy_sum

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    rows = 2 * CHUNK_ROWS + 37  # two full chunks and a short one
    hidden = torch.randn(rows, 64, dtype=dt, requires_grad=True)
    weight = (0.1 * torch.randn(1000, 64)).to(dt).requires_grad_(train_weight)
    targets = torch.randint(0, 1000, (rows,))

    expected = F.cross_entropy((hidden @ weight.t()).float(), targets, reduction="sum") / 7
    expected.backward()
    expected_grads = [hidden.grad.clone()] + ([weight.grad.clone()] if train_weight else [])
    hidden.grad = weight.grad = None
    fused = head_cross_entropy_sum(hidden, weight, targets) / 7
    fused.backward()
    grads = [hidden.grad] + ([weight.grad] if train_weight else [])

    assert fused.dtype == torch.float32
    tolerance = 1e-6 if dt == torch.float32 else 1e-2  # bf16: the logits' own rounding
    assert abs(fused.item() - expected.item()) <= tolerance * abs(expected.item())
    for got, want in zip(grads, expected_grads, strict=True):
        assert got.dtype == want.dtype
        scale = want.abs().max().item()
        assert (got.float() - want.float()).abs().max().item() <= tolerance * 10 * scale


def test_head_cross_entropy_sum_of_no_rows_is_zero() -> None:
    import torch

    from kubetune_trainer.fused_head_loss import head_cross_entropy_sum

    hidden = torch.zeros(0, 8, requires_grad=True)
    loss = head_cross_entropy_sum(hidden, torch.randn(10, 8), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0 and hidden.grad.shape == (0, 8)


def test_the_head_is_fused_only_where_the_logits_are_its_plain_output(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from kubetune_trainer.labeled_head import LabeledPositionsHead

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert LabeledPositionsHead(model).fused  # a Llama: nothing after the head
    assert not LabeledPositionsHead(model, fused_loss=False).fused
    model.config.model_type = "gemma2"  # soft-caps its logits after the head
    assert not LabeledPositionsHead(model).fused


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

    # Each example draws its own masks (a shared prefix draws one for every example: its own test).
    unshared = {"shared_prefix": False}
    plain, _ = losses(spec, tiny_model_dir, rows, tmp_path / "plain", fast_dropout=False, **unshared)
    other_masks, _ = losses(
        spec, tiny_model_dir, rows, tmp_path / "shifted", shift_rng=True, fast_dropout=False, **unshared
    )
    fast, _ = losses(spec, tiny_model_dir, rows, tmp_path / "fast", fast_dropout=True, **unshared)

    spread = max(abs(a - b) for a, b in zip(plain, other_masks, strict=True))
    assert spread > 0  # the masks did change
    assert max(abs(a - b) for a, b in zip(plain, fast, strict=True)) <= 2 * spread, (plain, fast, other_masks)
    assert abs(sum(plain) - sum(fast)) / STEPS <= 2 * abs(sum(plain) - sum(other_masks)) / STEPS + 1e-3

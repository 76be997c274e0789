"""Each training speed-up of the trainer, on and off, back to back in one process.

    PYTHONPATH=hack uv run python bench/levers.py                      # both workloads, SmolLM2
    PYTHONPATH=hack uv run python bench/levers.py --model tiny --rounds 1 --batches 1

Separate processes on a shared machine vary by 10% or more from run to run, more than a single lever
is worth, so throughput.py's case-against-case figures cannot tell what each lever adds. Here one
process builds the Kubetune case of throughput.py (its spec, data, collator and KubetuneTrainer, the
same examples per step), draws a few steps' worth of its examples, and times the forward and backward
of each batch with every speed-up on and with each one off in turn, one right after the other (in
reverse order every other round), so that each variant is compared with "every speed-up" on the same
batch moments apart. Without per-example attention, the same examples are padded rows.
The figures are the median time and the median of those paired ratios over rounds and batches. The
optimizer step is the same in every variant and is left out.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import train_cases  # noqa: E402  (bench/ is on sys.path when a script in it runs)
import workloads  # noqa: E402
from throughput import example_lengths, model_dir  # noqa: E402


@contextmanager
def swapped(owner: Any, name: str, value: Any) -> Iterator[None]:
    """owner.name is value inside, what it was after."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def torch_dropout(self: Any, x: Any) -> Any:
    import torch.nn.functional as F

    return F.dropout(x, self.p, self.training)


def fast_dropout_class() -> Any:
    from kubetune_trainer.fast_dropout import FastDropout

    return FastDropout


@contextmanager
def regular_pages(trainer: Any) -> Iterator[None]:
    """The frozen weights in ordinary memory (a copy made once), instead of on huge pages."""
    from kubetune_trainer.huge_pages import frozen_weights

    weights = frozen_weights(trainer.model)
    if not hasattr(trainer, "regular_copies"):
        trainer.regular_copies = [p.detach().clone() for p in weights]
    huge = [p.data for p in weights]
    for p, copy in zip(weights, trainer.regular_copies, strict=True):
        p.data = copy
    try:
        yield
    finally:
        for p, data in zip(weights, huge, strict=True):
            p.data = data


# Each variant: what it switches off around the step, and whether its batch is the collator's own (one row
# attended per example, where the batches pack several examples a row) or the same examples as padded rows.
VARIANTS: dict[str, tuple[Callable[[Any], AbstractContextManager[Any]], str]] = {
    "every speed-up": (lambda trainer: nullcontext(), "own"),
    "without per-example attention (padded rows)": (lambda trainer: nullcontext(), "rows"),
    "without the shared prefix (each example's own copy)": (
        lambda trainer: swapped(trainer, "shared_prefix", False),
        "own",
    ),
    "without the fused head loss": (lambda trainer: swapped(trainer.labeled_head, "fused", False), "own"),
    # transformers' own loss over logits at every position (and so no fused head either)
    "without the labeled-positions head": (lambda trainer: swapped(trainer, "labeled_head", None), "own"),
    "without the fast dropout masks": (
        lambda trainer: swapped(fast_dropout_class(), "forward", torch_dropout),
        "own",
    ),
    "without huge pages for the frozen weights": (regular_pages, "own"),
}


def measure(workload: workloads.Workload, folder: Path, batches: int, rounds: int) -> dict[str, list[float]]:
    import torch

    from kubetune_trainer.data import PackingCollator

    out = Path(tempfile.mkdtemp(prefix="bench-levers-")) / "run"
    trainer, counting = train_cases.kubetune(workload, folder, out, steps=batches)
    model = trainer.model
    model.train()
    own = counting.collate
    rows = PackingCollator(own.pad_token_id, own.max_length)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    # The same examples for every variant: a seeded draw of a step's worth per batch.
    chunks = [random.Random(b).sample(examples, train_cases.EXAMPLES_PER_STEP) for b in range(batches + 1)]
    inputs = [
        {"own": trainer._prepare_inputs(own(c)), "rows": trainer._prepare_inputs(rows(c))} for c in chunks
    ]

    def timed(name: str, batch: dict[str, dict[str, Any]], seed: int) -> float:
        switched_off, layout = VARIANTS[name]
        with switched_off(trainer):
            torch.manual_seed(seed)
            start = time.perf_counter()
            trainer.compute_loss(model, dict(batch[layout])).backward()
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
        return seconds

    for name in VARIANTS:  # warm-up, untimed
        timed(name, inputs[0], 0)
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_ in range(1, rounds + 1):
        order = list(VARIANTS) if round_ % 2 else list(reversed(VARIANTS))
        for batch in inputs[1:]:
            for name in order:
                seconds[name].append(timed(name, batch, round_))
    return seconds


def report(name: str, seconds: dict[str, list[float]]) -> list[str]:
    base = seconds["every speed-up"]
    lines = [f"\n{name}: forward + backward of one step"]
    lines += ["| variant | median s | paired ratio to every speed-up |", "| --- | --- | --- |"]
    for variant, values in seconds.items():
        ratios = [value / own for value, own in zip(values, base, strict=True)]
        lines.append(f"| {variant} | {statistics.median(values):.3f} | {statistics.median(ratios):.3f}x |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--workloads", default="tone,chat")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per variant and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens-per-step", type=int, default=train_cases.BATCH * train_cases.MAX_SEQ_LENGTH)
    parser.add_argument("--max-seq-length", type=int, default=train_cases.MAX_SEQ_LENGTH)
    args = parser.parse_args()
    train_cases.MAX_SEQ_LENGTH = args.max_seq_length
    folder = model_dir(args.model)
    for name in args.workloads.split(","):
        workload = workloads.load(name)
        lengths = example_lengths(folder, workload)
        # The same examples per step as throughput.py: as many as fill its tokens per step on average.
        train_cases.EXAMPLES_PER_STEP = max(1, round(args.tokens_per_step * len(lengths) / sum(lengths)))
        seconds = measure(workload, folder, args.batches, args.rounds)
        print(
            "\n".join(report(f"{name} ({train_cases.EXAMPLES_PER_STEP} examples a step)", seconds)),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Held-out accuracy of the trainer with every training speed-up against the trainer without them.

    PYTHONPATH=hack uv run python bench/held_out.py                    # both workloads, seeds 1 2 3
    PYTHONPATH=hack uv run python bench/held_out.py --model tiny --seeds 1 --steps 2 --max-seq-length 512

The speed-ups keep each step's computation, but two of them draw LoRA dropout masks differently: the
fast masks come from another generator, and a shared prefix draws one mask for every example's copy of
it. Losses over 20 steps are tested equal only with dropout off, so this measures what the issue asks
of every speed-up: that held-out accuracy does not fall. Per workload and seed, the tone example's job
(examples/finetunejob-smollm2-tone.yaml: LoRA r=16 alpha=32 dropout 0.05 on q/k/v/o, 60 steps at 1e-3,
batch 8, early stopping on exact match), with packing on and its seeds set, is trained twice through the
trainer's own `train()`: as it is, and with every speed-up off (no per-example attention or shared
prefix, the full head and its loss, torch's dropout, ordinary pages). Each prints the held-out exact
match of the checkpoint the trainer keeps (its final evaluation, on all 40 rows of
examples/data/tone/eval.jsonl): tone with the example's text template, chat as bench/workloads.py's
conversations (a 76-token system prompt, assistant-only loss).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import workloads  # noqa: E402  (bench/ is on sys.path when a script in it runs)
from levers import swapped  # noqa: E402
from throughput import model_dir  # noqa: E402

EXAMPLE = REPO / "examples" / "finetunejob-smollm2-tone.yaml"
VARIANTS = ("every speed-up", "without the speed-ups")


@contextmanager
def without_speedups() -> Iterator[None]:
    """The trainer's own train() with each speed-up off, as bench/train_cases.py's kubetune-plain."""
    from kubetune_trainer import hf_trainer, train

    class PlainTrainer(hf_trainer.KubetuneTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(
                *args,
                **kwargs,
                labeled_positions_only=False,
                fused_head_loss=False,
                fast_dropout=False,
                huge_pages=False,
                shared_prefix=False,
            )

    with (
        swapped(hf_trainer, "KubetuneTrainer", PlainTrainer),
        swapped(train, "per_example_rows_for", lambda spec, model: False),
    ):
        yield


def job(workload: str, seed: int, folder: Path, out: Path, steps: int | None, max_length: int | None) -> Any:
    """The tone example's job with packing, the seed, local files and no export."""
    import yaml

    from kubetune_api import FineTuneJob, RunContext, TrainerInput

    body = yaml.safe_load(EXAMPLE.read_text())
    spec = body["spec"]
    spec["baseModel"] = {"uri": str(folder)}
    spec["export"] = {"enabled": False}
    spec["training"].update(packing=True, seed=seed)
    if steps is not None:
        spec["training"].update(maxSteps=steps, evalSteps=steps, saveSteps=steps)
    if max_length is not None:
        spec["training"]["maxSeqLength"] = max_length
    if workload == "chat":
        data = out / "data"
        data.mkdir(parents=True, exist_ok=True)
        train_rows = workloads.load("chat").write_jsonl(data / "train.jsonl")
        eval_rows = workloads.load("chat", workloads.TONE_EVAL_FILE).write_jsonl(data / "eval.jsonl")
        spec["dataset"] = {"trainUri": str(train_rows), "evalUri": str(eval_rows), "format": "chat"}
    else:
        spec["dataset"].update(trainUri=str(workloads.TONE_FILE), evalUri=str(workloads.TONE_EVAL_FILE))
    spec["dataset"]["seed"] = seed
    ftj = FineTuneJob.from_k8s(body)
    run = RunContext(name=workload, namespace="local", run_id=ftj.spec_hash(), output_root=str(out / "run"))
    return TrainerInput(spec=ftj.spec, run=run)


def measure(workload: str, seed: int, variant: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    with tempfile.TemporaryDirectory(prefix=f"bench-held-out-{workload}-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        with without_speedups() if variant != VARIANTS[0] else nullcontext():
            spec = job(workload, seed, folder, work, args.steps, args.max_seq_length)
            trained = train(spec, work / "train", LoggingSink(600))
    return {
        "workload": workload,
        "seed": seed,
        "variant": variant,
        "exactMatch": trained.get("evalExactMatch"),
        "bestStep": trained.get("bestStep"),
        "rows": trained.get("taskMetricRows"),
        "seconds": round(time.monotonic() - started),
    }


def report(workload: str, results: list[dict[str, Any]]) -> list[str]:
    lines = [f"\n{workload}: held-out exact match ({results[0]['rows']} rows)", ""]
    lines += [f"| seed | {' | '.join(VARIANTS)} | difference (points) |", "| --- | --- | --- | --- |"]
    differences = []
    for seed in sorted({r["seed"] for r in results}):
        fast, plain = (next(r for r in results if (r["seed"], r["variant"]) == (seed, v)) for v in VARIANTS)
        difference = 100 * (fast["exactMatch"] - plain["exactMatch"])
        differences.append(difference)
        cells = [f"{r['exactMatch']:.3f} (step {r['bestStep']}, {r['seconds']} s)" for r in (fast, plain)]
        lines.append(f"| {seed} | {' | '.join(cells)} | {difference:+.1f} |")
    lines.append(f"\nmean difference: {statistics.mean(differences):+.1f} points (every speed-up minus none)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--workloads", default="tone,chat")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the example's)")
    parser.add_argument("--max-seq-length", type=int, help="the tiny model's tokenizer needs 512")
    parser.add_argument("--json", type=Path, default=None, help="also write every result here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    folder = model_dir(args.model)
    results = []
    for workload in args.workloads.split(","):
        ran = []
        for seed in args.seeds:
            for variant in VARIANTS if seed % 2 else reversed(VARIANTS):
                ran.append(measure(workload, seed, variant, folder, args))
                print(json.dumps(ran[-1]), flush=True)
        print("\n".join(report(workload, ran)), flush=True)
        results += ran
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

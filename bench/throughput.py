"""Training throughput: a plain HF Trainer + PEFT baseline (texts padded to maxSeqLength) against
Kubetune's trainer path with packing (padding-free rows, positions restarting per example), in one run.

    PYTHONPATH=hack uv run python bench/throughput.py [--model smollm2|tiny] [--steps 10] [--warmup 2]

Both cases train the same model on the same rows (examples/data/tone/train.jsonl, rendered with
"Phrase: {phrase}\\nTone: {tone}") for the same number of optimizer steps: LoRA r=16 alpha=32 on
q/k/v/o_proj, batch 8, fp32, learning rate 2e-4, seed 42. Each case runs in its own process (so peak RSS
is its own). Real tokens are counted from each batch the model sees: the attention mask's ones
(baseline) or the rows' unpadded lengths (packing). Only the steps after the warm-up are timed.

Prints real tokens/s, seconds per step and peak RSS for both, and the ratio (goal: >= 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEMPLATE = "Phrase: {phrase}\nTone: {tone}"
DATA = REPO / "examples" / "data" / "tone" / "train.jsonl"
MAX_SEQ_LENGTH = 128
BATCH = 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
CASES = ("baseline", "kubetune")

if TYPE_CHECKING:
    from kubetune_api import FineTuneJobSpec


def model_dir(name: str) -> Path:
    from devcluster import model

    if name == "smollm2":
        return model.smollm2(verify=False)
    return model.write_tiny_llama(Path(tempfile.mkdtemp(prefix="bench-tiny-")))


class Timer:
    """A TrainerCallback-compatible timer of the steps after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.end = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.end = time.perf_counter()


class Counting:
    """Wraps a collator, recording the real tokens of every batch it builds (one batch per step)."""

    def __init__(self, collate: Any, count: Any) -> None:
        self.collate, self.count = collate, count
        self.tokens: list[int] = []

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        batch = self.collate(examples)
        self.tokens.append(int(self.count(batch)))
        return batch


def job_spec(folder: Path, total_steps: int) -> FineTuneJobSpec:
    """The FineTuneJob spec of the Kubetune case: the baseline's settings, with packing."""
    from kubetune_api import FineTuneJobSpec

    return FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": str(folder)},
            "dataset": {"trainUri": str(DATA), "textTemplate": TEMPLATE},
            "method": "lora",
            "lora": {"r": 16, "alpha": 32, "targetModules": TARGETS},
            "training": {
                "maxSteps": total_steps,
                "batchSize": BATCH,
                "maxSeqLength": MAX_SEQ_LENGTH,
                "learningRate": 2e-4,
                "packing": True,
                "seed": 42,
                "precision": "fp32",
                "gradientCheckpointing": False,  # as the baseline
                "loggingSteps": 1,
            },
            "resources": {"gpusPerNode": 0},
            "output": {"uri": "s3://kubetune-bench/runs"},  # never written: only the arguments are built
        }
    )


def run_case(case: str, folder: Path, steps: int, warmup: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from kubetune_trainer.data import REAL_TOKENS, PackingCollator, encode_rows, read_rows
    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.peft_config import to_lora_config, to_training_arguments
    from kubetune_trainer.train import set_kv_cache

    torch.manual_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    rows = read_rows(DATA)
    total_steps = warmup + steps
    out = Path(tempfile.mkdtemp(prefix=f"bench-{case}-"))
    timer = type("StepTimer", (Timer, TrainerCallback), {})(warmup)

    if case == "baseline":
        # The common recipe: tokenize with padding="max_length", the LM collator masks padding labels.
        texts = [TEMPLATE.format_map(row) for row in rows]
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_SEQ_LENGTH)
        dataset = [
            {"input_ids": ids, "attention_mask": mask}
            for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
        ]
        collator = Counting(
            DataCollatorForLanguageModeling(tokenizer, mlm=False), lambda b: b["attention_mask"].sum()
        )
        lora = LoraConfig(
            task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS
        )
        model = get_peft_model(model, lora)
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=total_steps,
            per_device_train_batch_size=BATCH,
            learning_rate=2e-4,
            use_cpu=True,
            seed=42,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            logging_steps=1,
            remove_unused_columns=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    else:
        spec = job_spec(folder, total_steps)
        dataset = encode_rows(spec.dataset, "text", rows, tokenizer, MAX_SEQ_LENGTH)
        collator = Counting(PackingCollator(tokenizer.pad_token_id, MAX_SEQ_LENGTH), lambda b: b[REAL_TOKENS])
        assert spec.lora is not None
        model = get_peft_model(model, to_lora_config(spec.lora, model))
        set_kv_cache(model, False)
        args = to_training_arguments(spec, out, has_eval=False)
        trainer = KubetuneTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.add_callback(timer)
    result = trainer.train()
    seconds = timer.end - timer.start
    tokens = sum(collator.tokens[warmup:total_steps])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "case": case,
        "steps": steps,
        "realTokens": tokens,
        "realTokensPerStep": round(tokens / steps, 1),
        "secondsPerStep": round(seconds / steps, 3),
        "realTokensPerSecond": round(tokens / seconds, 1),
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "firstLoss": round(losses[0], 4) if losses else None,
        "lastLoss": round(losses[-1], 4) if losses else None,
        "trainLoss": round(result.training_loss, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        print("RESULT " + json.dumps(run_case(args.case, args.model_dir, args.steps, args.warmup)))
        return 0

    folder = model_dir(args.model)
    print(
        f"model {args.model} ({folder.name}); {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.warmup} warm-up + {args.steps} timed steps per case",
        flush=True,
    )
    results = {}
    for case in CASES:
        cmd = [
            sys.executable,
            __file__,
            "--case",
            case,
            "--model-dir",
            str(folder),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            return 1
        results[case] = json.loads(lines[-1].removeprefix("RESULT "))
        print(json.dumps(results[case]), flush=True)

    print(f"\n{'case':<34} {'real tok/s':>10} {'s/step':>7} {'real tok/step':>13} {'peak RSS':>9}")
    labels = {"baseline": "HF Trainer + PEFT, padded to 128", "kubetune": "Kubetune, packing"}
    for case, r in results.items():
        print(
            f"{labels[case]:<34} {r['realTokensPerSecond']:>10} {r['secondsPerStep']:>7} "
            f"{r['realTokensPerStep']:>13} {r['peakRssMiB']:>5} MiB"
        )
    ratio = results["kubetune"]["realTokensPerSecond"] / results["baseline"]["realTokensPerSecond"]
    print(f"ratio (real tokens/s, kubetune / baseline): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

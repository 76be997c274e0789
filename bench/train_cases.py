"""The cases of bench/throughput.py that run in this project's environment, one per process:

- hf-dynamic: HF Trainer + PEFT, padding to the longest row of each batch (DataCollatorForSeq2Seq with
  the prompt's labels at -100 for chat), as the transformers docs recipe;
- trl: TRL's SFTTrainer with packing (best-fit decreasing) and padding_free, completion-only loss on
  the chat workload's conversational prompt/completion rows;
- kubetune: the trainer's own path (its spec, encode_rows, collator, arguments and KubetuneTrainer),
  with packing; kubetune-plain is the same without the speed-ups, to show what they add.

Every case: the same rows, LoRA r=16 alpha=32 dropout 0.05 on q/k/v/o, the same precision (PRECISION),
learning rate 2e-4, seed 42, the same number of optimizer steps of about 1,024 real tokens each: TRL and
Olive pack 8 rows of 128 tokens, the others take as many examples as fill that on average. Real tokens
are counted from each batch the model sees (padding excluded), and only the steps after the warm-up are
timed.

Precision: fp32 trains in fp32 everywhere. bf16 is mixed precision in every case (the Trainer's bf16
autocast, the LoRA weights and optimizer state in fp32); the baselines load the frozen base in bf16, their
fastest documented setting, and Kubetune loads it as its spec's `precision: bf16` does. Every case
states the precision explicitly: TRL's SFTConfig defaults to bf16 when it is not told.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads import Workload

MAX_SEQ_LENGTH = 128
# TRL and Olive pack BATCH rows of MAX_SEQ_LENGTH tokens a step; the cases that batch whole examples
# take as many as fill those tokens on average (set by throughput.py from the workload's lengths).
BATCH = 8
EXAMPLES_PER_STEP = 8
LEARNING_RATE = 2e-4
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
SEED = 42
PRECISION = "fp32"  # or "bf16" (set by throughput.py --precision)


class StepClock:
    """Times the optimizer steps after the warm-up (a TrainerCallback once mixed in)."""

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
    """Wraps a collator, recording the real tokens of every batch it builds and the positions the model
    computes for them (fewer where a shared prefix is computed once; by default, the real tokens)."""

    def __init__(self, collate: Any, count: Any, computed: Any = None) -> None:
        self.collate, self.count, self.computed_count = collate, count, computed or count
        self.tokens: list[int] = []
        self.computed: list[int] = []

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        batch = self.collate(examples)
        self.tokens.append(int(self.count(batch)))
        self.computed.append(int(self.computed_count(batch)))
        return batch


def not_padding(batch: dict[str, Any]) -> int:
    """Real tokens of a batch: the attention mask's ones, or every position of a padding-free row."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def peft_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
    )


def hf_arguments(out: Path, steps: int, batch: int, **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "max_steps": steps,
        "per_device_train_batch_size": batch,
        # TRL turns it on by default; memory is no constraint here, and off is faster.
        "gradient_checkpointing": False,
        "learning_rate": LEARNING_RATE,
        "use_cpu": not _cuda(),
        "seed": SEED,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "logging_steps": 1,
        "bf16": PRECISION == "bf16",
        **extra,
    }


def base_dtype() -> Any:
    """The dtype the baselines load the frozen base in: bf16 for mixed precision, else fp32."""
    import torch

    return torch.bfloat16 if PRECISION == "bf16" else torch.float32


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def hf_dynamic(workload: Workload, folder: Path, out: Path, steps: int) -> tuple[Any, Counting]:
    from peft import get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=base_dtype()), peft_config())
    dataset = []
    for row in workload.rows:
        if workload.template is not None:
            text = workload.template.format_map(row) + tokenizer.eos_token
            ids = tokenizer(text)["input_ids"][:MAX_SEQ_LENGTH]
            labels = list(ids)
        else:
            ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            prompt = tokenizer.apply_chat_template(
                row["messages"][:-1], tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
            ids = ids[:MAX_SEQ_LENGTH]
            labels = [-100] * len(prompt) + list(ids[len(prompt) :])
        dataset.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels[: len(ids)]})
    padding = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    collator = Counting(padding, not_padding)
    args = TrainingArguments(**hf_arguments(out, steps, EXAMPLES_PER_STEP, remove_unused_columns=False))
    return Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator), collator


def trl(workload: Workload, folder: Path, out: Path, steps: int) -> tuple[Any, Counting]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=base_dtype())
    if workload.template is not None:
        dataset = Dataset.from_list([{"text": workload.template.format_map(row)} for row in workload.rows])
    else:
        dataset = Dataset.from_list(workload.prompt_completion_rows())
    config = SFTConfig(
        **hf_arguments(out, steps, BATCH),
        max_length=MAX_SEQ_LENGTH,
        packing=True,
        padding_free=True,
        dataset_num_proc=1,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config()
    )
    collator = Counting(trainer.data_collator, not_padding)
    trainer.data_collator = collator
    trainer.args.remove_unused_columns = False
    return trainer, collator


def kubetune(
    workload: Workload, folder: Path, out: Path, steps: int, speedups: bool = True
) -> tuple[Any, Counting]:
    from transformers import set_seed

    from kubetune_api import FineTuneJobSpec
    from kubetune_trainer.data import EXAMPLE_LENGTHS, REAL_TOKENS, SHARED_PREFIX, encode_rows
    from kubetune_trainer.hf_trainer import KubetuneTrainer
    from kubetune_trainer.models import load_for_training
    from kubetune_trainer.peft_config import to_training_arguments
    from kubetune_trainer.train import data_collator, per_example_rows_for, prepare_model, set_kv_cache

    data = workload.write_jsonl(out.parent / f"{workload.name}.jsonl")
    dataset_spec: dict[str, Any] = {"trainUri": str(data)}
    dataset_spec.update({"textTemplate": workload.template} if workload.template else {"format": "chat"})
    spec = FineTuneJobSpec.model_validate(
        {
            "baseModel": {"uri": str(folder)},
            "dataset": dataset_spec,
            "method": "lora",
            "lora": {
                "r": LORA["r"],
                "alpha": LORA["alpha"],
                "dropout": LORA["dropout"],
                "targetModules": LORA["targets"],
            },
            "training": {
                "maxSteps": steps,
                "batchSize": EXAMPLES_PER_STEP,
                "maxSeqLength": MAX_SEQ_LENGTH,
                "learningRate": LEARNING_RATE,
                "packing": True,
                "seed": SEED,
                "precision": PRECISION,
                "gradientCheckpointing": False,
                "loggingSteps": 1,
            },
            "resources": {"gpusPerNode": 1 if _cuda() else 0},
            "output": {"uri": "s3://kubetune-bench/runs"},  # never written: only the arguments are built
        }
    )
    set_seed(SEED)
    # The trainer's own loader: the base in fp32 at every precision (bf16 autocasts it).
    base, tokenizer = load_for_training(folder, spec.effective_quantization)
    model = prepare_model(spec, base)
    set_kv_cache(model, False)
    fmt = "text" if workload.template else "chat"
    dataset = encode_rows(spec.dataset, fmt, workload.rows, tokenizer, MAX_SEQ_LENGTH)
    # The speed-ups include one-row batches attended per example where the model allows it.
    per_example = speedups and per_example_rows_for(spec, model)

    def computed(batch: dict[str, Any]) -> int:
        # The trainer computes a one-row batch's shared prefix once (with the speed-ups on).
        shared = int(batch.get(SHARED_PREFIX, 0)) * (len(batch.get(EXAMPLE_LENGTHS, [])) - 1)
        return int(batch[REAL_TOKENS]) - shared

    collator = Counting(
        data_collator(spec, tokenizer.pad_token_id, per_example), lambda b: b[REAL_TOKENS], computed
    )
    trainer = KubetuneTrainer(
        model=model,
        args=to_training_arguments(spec, out, has_eval=False),
        train_dataset=dataset,
        data_collator=collator,
        labeled_positions_only=speedups,
        fast_dropout=speedups,
        huge_pages=speedups,
        shared_prefix=speedups,
    )
    return trainer, collator


BUILDERS = {
    "hf-dynamic": hf_dynamic,
    "trl": trl,
    "kubetune": kubetune,
    "kubetune-plain": lambda *a: kubetune(*a, speedups=False),
}


def run(case: str, workload: Workload, folder: Path, steps: int, warmup: int) -> dict[str, Any]:
    from transformers import TrainerCallback

    out = Path(tempfile.mkdtemp(prefix=f"bench-{case}-")) / "run"
    trainer, collator = BUILDERS[case](workload, folder, out, warmup + steps)
    # Full batches only: an epoch's short last batch would time a smaller step than the others.
    trainer.args.dataloader_drop_last = True
    clock = type("Clock", (StepClock, TrainerCallback), {})(warmup)
    trainer.add_callback(clock)
    trainer.train()
    seconds = clock.end - clock.start
    # One batch per optimizer step (no accumulation); the collator may have built one more ahead.
    tokens = sum(collator.tokens[warmup : warmup + steps])
    computed = sum(collator.computed[warmup : warmup + steps])
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "case": case,
        "precision": PRECISION,
        "steps": steps,
        "realTokens": tokens,
        "realTokensPerStep": round(tokens / steps, 1),
        "computedTokensPerStep": round(computed / steps, 1),
        "secondsPerStep": round(seconds / steps, 3),
        "realTokensPerSecond": round(tokens / seconds, 1),
        "computedTokensPerSecond": round(computed / seconds, 1),
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "losses": [round(float(x), 4) for x in losses],
    }

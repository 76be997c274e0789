"""The Olive case of bench/throughput.py: `olive finetune` (olive-ai 0.13.0) in its own environment,
timed from inside. Run with that environment's Python, never this project's:

    OLIVE_PYTHON bench/olive_case.py --steps N --warmup W -- <olive finetune arguments>

transformers' Trainer, which Olive's LoRA pass drives, gets a step clock and a real-token count of each
batch (the attention mask's ones) before Olive's CLI runs; prints one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any


def instrument(warmup: int, steps: int, record: dict[str, Any]) -> None:
    import transformers

    original_step = transformers.Trainer.training_step
    original_train = transformers.Trainer.train

    def training_step(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        mask = inputs.get("attention_mask")
        record["tokens"].append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
        step = len(record["tokens"]) - 1
        if step == warmup:
            record["start"] = time.perf_counter()
        elif step == warmup + steps:  # the timed steps end where the next one starts
            record["end"] = time.perf_counter()
        return original_step(self, model, inputs, *args, **kwargs)

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.args.max_steps = warmup + steps + 1
        self.args.dataloader_drop_last = True  # as the other cases
        result = original_train(self, *args, **kwargs)
        record["losses"] = [e["loss"] for e in self.state.log_history if "loss" in e]
        return result

    transformers.Trainer.training_step = training_step
    transformers.Trainer.train = train


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("olive_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    record: dict[str, Any] = {"tokens": [], "start": 0.0, "end": 0.0, "losses": []}
    instrument(args.warmup, args.steps, record)

    from olive.cli.launcher import main as olive_main

    sys.argv = ["olive", "finetune", *[a for a in args.olive_args if a != "--"]]
    olive_main()
    seconds = record["end"] - record["start"]
    tokens = sum(record["tokens"][args.warmup : args.warmup + args.steps])
    result = {
        "case": "olive",
        "steps": args.steps,
        "realTokens": tokens,
        "realTokensPerStep": round(tokens / args.steps, 1),
        "secondsPerStep": round(seconds / args.steps, 3),
        "realTokensPerSecond": round(tokens / seconds, 1),
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "losses": [round(float(x), 4) for x in record["losses"]],
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

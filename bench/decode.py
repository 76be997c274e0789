"""Decode speed and accuracy of the exported ONNX models against HF transformers, in one run.

    PYTHONPATH=hack uv run python bench/decode.py [--targets int4-cpu,int8-cpu,fp32-cpu]
        [--adapter DIR] [--workdir DIR] [--prompts 12] [--new-tokens 32] [--accuracy-rows 40]
        [--int4 KEY=VALUE ...] [--threads N] [--json FILE]
    PYTHONPATH=hack uv run python bench/decode.py --smoke --json out.json   # tiny model, seconds

1. The tone LoRA adapter: --adapter, or trained here on SmolLM2-135M-Instruct by the trainer's own train()
   from examples/finetunejob-smollm2-tone.yaml with local paths (bench_common.py: "Phrase: {phrase}\\nTone:
   {tone}", LoRA r=16 alpha=32 on q/k/v/o_proj, 60 steps, learning rate 1e-3, batch 8, maxSeqLength 128,
   fp32, early stopping on exact match).
2. merge_adapter folds it into the fp32 base: the baseline is that merged model in HF transformers
   (`generate`, greedy, KV cache on), fp32 on the CPU and bf16 on CUDA; each target is compared with the
   baseline of its execution provider.
3. build_onnx builds every target (precision-provider) with the API's ExportTarget defaults, so the
   project's default int4 settings are what is measured; --int4 overrides them (API names, e.g.
   --int4 blockSize=64 --int4 algorithm=rtn).
4. Speed: --prompts held-out tone prompts, one at a time, after one untimed warm-up prompt; each decodes
   exactly --new-tokens tokens (EOS suppressed on both sides: min_new_tokens in transformers, min_length
   in onnxruntime-genai). Prefill tokens/s = prompt tokens / time from the request to the first new token;
   decode tokens/s = (new tokens - 1) / time after the first new token; the median over the prompts.
   Both sides get the same prompt token ids and the same number of CPU threads (--threads).
5. Accuracy: greedy answers (at most 4 new tokens, stopping at EOS) to all --accuracy-rows held-out rows
   (examples/data/tone/eval.jsonl); a row is right when the answer's first word is its tone.

Prints the machine, a table (prefill and decode tokens/s, decode ratio against the baseline, accuracy and
its difference from the baseline in points) and, with --json, writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import bench_common  # noqa: E402  (bench/ on sys.path, above)

if TYPE_CHECKING:
    from kubetune_api import ExportTarget
    from kubetune_trainer.generation import Prompt

TASK = bench_common.TASKS["tone"]
ACCURACY_NEW_TOKENS = 4
CPU_TARGETS = ("int4-cpu", "int8-cpu", "fp32-cpu")
CUDA_TARGETS = ("fp16-cuda",)
LIBRARIES = ("torch", "transformers", "peft", "onnxruntime", "onnxruntime-genai", "onnxruntime-genai-cuda")


@dataclass(frozen=True)
class Settings:
    """What one run measures; --smoke shrinks everything to the tiny random Llama."""

    smoke: bool
    targets: tuple[str, ...]
    prompts: int
    new_tokens: int
    accuracy_rows: int | None
    threads: int
    int4_overrides: dict[str, Any]


@dataclass
class Speed:
    """Tokens per second of each timed prompt."""

    prefill: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)

    def add(self, prompt_tokens: int, new_tokens: int, start: float, first: float, end: float) -> None:
        self.prefill.append(prompt_tokens / (first - start))
        self.decode.append((new_tokens - 1) / (end - first))


@dataclass
class Measured:
    """One row of the table: a baseline (transformers) or an ONNX target."""

    name: str
    engine: str
    device: str
    baseline: str
    speed: Speed
    accuracy: float
    build_seconds: float | None = None
    int4: dict[str, Any] | None = None

    @property
    def prefill_tokens_per_second(self) -> float:
        return statistics.median(self.speed.prefill)

    @property
    def decode_tokens_per_second(self) -> float:
        return statistics.median(self.speed.decode)


def ort_cuda_available() -> bool:
    import onnxruntime_genai as og

    return bool(og.is_cuda_available())


# ---- accuracy --------------------------------------------------------------------------------------------


def first_word(answer: str) -> str:
    words = answer.split()
    return words[0] if words else ""


def first_word_accuracy(tokenizer: Any, new_tokens: list[list[int]], prompts: list[Prompt]) -> float:
    from kubetune_trainer.generation import accuracy, answer_text

    answers = [first_word(answer_text(tokenizer, tokens)) for tokens in new_tokens]
    return accuracy(answers, [p.answer for p in prompts])


# ---- transformers ----------------------------------------------------------------------------------------


class TokenClock:
    """A `generate` streamer that notes when the first new token and the last one arrive."""

    def __init__(self) -> None:
        self.calls = 0
        self.first = 0.0
        self.last = 0.0

    def put(self, value: Any) -> None:
        # generate puts the prompt first, then every new token as it is chosen.
        now = time.perf_counter()
        self.calls += 1
        if self.calls == 2:
            self.first = now
        self.last = now

    def end(self) -> None:
        pass


class OnDevice:
    """Hands generation.torch_greedy's CPU tensors to a model on another device, and its output back."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.generation_config = model.generation_config

    def eval(self) -> OnDevice:
        self.model.eval()
        return self

    def generate(self, input_ids: Any, attention_mask: Any, **kwargs: Any) -> Any:
        device = self.model.device
        out = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
        )
        return out.cpu()


def load_transformers(merged_dir: Path, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dtype)
    return model.to(device).eval()


def transformers_timed(
    model: Any, tokenizer: Any, ids: list[int], new_tokens: int, speed: Speed | None
) -> None:
    """Generate exactly new_tokens tokens for one prompt (EOS suppressed), adding its speeds to `speed`."""
    import torch

    from kubetune_trainer.generation import eos_ids

    clock = TokenClock()
    start = time.perf_counter()
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            eos_token_id=sorted(eos_ids(tokenizer, model)),
            pad_token_id=tokenizer.pad_token_id,
            streamer=clock,
        )
    generated = out.shape[1] - len(ids)
    if generated != new_tokens:
        raise RuntimeError(f"transformers generated {generated} tokens, not {new_tokens}")
    if speed is not None:
        speed.add(len(ids), new_tokens, start, clock.first, clock.last)


def measure_transformers(
    merged_dir: Path,
    device: str,
    tokenizer: Any,
    prompts: list[Prompt],
    rows: list[Prompt],
    settings: Settings,
) -> Measured:
    from kubetune_trainer.generation import encode, torch_greedy

    model = load_transformers(merged_dir, device)
    timed = [encode(tokenizer, p.text) for p in prompts]
    speed = Speed()
    transformers_timed(model, tokenizer, timed[0], settings.new_tokens, None)  # warm-up
    for ids in timed:
        transformers_timed(model, tokenizer, ids, settings.new_tokens, speed)
    answers = torch_greedy(
        OnDevice(model), tokenizer, [encode(tokenizer, p.text) for p in rows], ACCURACY_NEW_TOKENS
    )
    name = baseline_name(device)
    return Measured(name, "transformers", device, name, speed, first_word_accuracy(tokenizer, answers, rows))


def baseline_name(device: str) -> str:
    return f"transformers-{'bf16' if device == 'cuda' else 'fp32'}-{device}"


# ---- onnxruntime-genai -----------------------------------------------------------------------------------


def load_onnx(model_dir: Path, threads: int) -> Any:
    """The model with onnxruntime's intra-op threads set to the same count torch uses."""
    import onnxruntime_genai as og

    config = og.Config(str(model_dir))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    return og.Model(config)


def onnx_timed(model: Any, ids: list[int], new_tokens: int, speed: Speed | None) -> None:
    """Generate exactly new_tokens tokens for one prompt (min_length suppresses EOS), adding its speeds."""
    import onnxruntime_genai as og

    start = time.perf_counter()
    params = og.GeneratorParams(model)
    length = len(ids) + new_tokens
    params.set_search_options(max_length=length, min_length=length, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)  # the prompt's forward pass
    generator.generate_next_token()  # chooses the first new token from the prompt's logits
    generator.get_next_tokens()  # waits for it (on CUDA)
    first = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
    generated = len(generator.get_sequence(0)) - len(ids)
    end = time.perf_counter()
    if generated != new_tokens:
        raise RuntimeError(f"onnxruntime-genai generated {generated} tokens, not {new_tokens}")
    if speed is not None:
        speed.add(len(ids), new_tokens, start, first, end)


def measure_onnx(
    target: ExportTarget,
    onnx_dir: Path,
    tokenizer: Any,
    eos: set[int],
    prompts: list[Prompt],
    rows: list[Prompt],
    settings: Settings,
) -> Measured:
    from kubetune_trainer.generation import encode, ort_greedy, ort_model

    model = load_onnx(onnx_dir, settings.threads)
    timed = [encode(tokenizer, p.text) for p in prompts]
    speed = Speed()
    onnx_timed(model, timed[0], settings.new_tokens, None)  # warm-up
    for ids in timed:
        onnx_timed(model, ids, settings.new_tokens, speed)
    del model  # its threads, before the next model runs
    answers = ort_greedy(
        ort_model(onnx_dir), [encode(tokenizer, p.text) for p in rows], ACCURACY_NEW_TOKENS, eos
    )
    device = target.execution_provider
    return Measured(
        target.name,
        "onnxruntime-genai",
        device,
        baseline_name(device),
        speed,
        first_word_accuracy(tokenizer, answers, rows),
        int4=target.int4.model_dump(by_alias=True) if target.precision == "int4" else None,
    )


# ---- targets ---------------------------------------------------------------------------------------------


def export_target(name: str, int4_overrides: dict[str, Any]) -> ExportTarget:
    """`int4-cpu` etc. as the API's ExportTarget: its defaults, with the int4 overrides."""
    from kubetune_api import ExportTarget

    precision, _, provider = name.partition("-")
    fields: dict[str, Any] = {"precision": precision, "executionProvider": provider}
    if precision == "int4" and int4_overrides:
        fields["int4"] = int4_overrides
    return ExportTarget.model_validate(fields)


def build_target(target: ExportTarget, merged_dir: Path, workdir: Path) -> tuple[Path, float]:
    from kubetune_trainer.onnx_build import build_onnx

    start = time.perf_counter()
    onnx_dir = build_onnx(target, merged_dir, workdir / "onnx" / target.name, workdir / "cache" / target.name)
    seconds = time.perf_counter() - start
    print(f"built {target.name} in {seconds:.1f} s", flush=True)
    return onnx_dir, seconds


# ---- the run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    machine: dict[str, Any]
    measured: list[Measured]
    timed_prompts: int
    accuracy_rows: int


def run(settings: Settings, workdir: Path, adapter: Path | None) -> Outcome:
    import torch

    from kubetune_trainer.generation import eos_ids
    from kubetune_trainer.onnx_build import merge_adapter

    torch.set_num_threads(settings.threads)
    targets = [export_target(name, settings.int4_overrides) for name in settings.targets]
    facts = bench_common.machine_facts(settings.threads, LIBRARIES)
    base_dir = bench_common.base_model_dir(workdir, settings.smoke)
    job = bench_common.trainer_input(TASK, base_dir, workdir, settings.smoke)
    adapter = adapter or bench_common.train_adapter(job, workdir)
    merged_dir = workdir / "merged"
    merged, tokenizer = merge_adapter(base_dir, adapter, merged_dir)
    eos = eos_ids(tokenizer, merged)
    del merged
    held_out = bench_common.held_out_prompts(job, tokenizer)
    prompts = held_out[: settings.prompts]
    rows = held_out[: settings.accuracy_rows]

    measured = []
    for device in sorted({t.execution_provider for t in targets}, key=["cpu", "cuda"].index):
        measured.append(measure_transformers(merged_dir, device, tokenizer, prompts, rows, settings))
        print(f"measured {measured[-1].name}", flush=True)
    for target in targets:
        onnx_dir, seconds = build_target(target, merged_dir, workdir)
        result = measure_onnx(target, onnx_dir, tokenizer, eos, prompts, rows, settings)
        result.build_seconds = seconds
        measured.append(result)
        print(f"measured {target.name}", flush=True)
    facts["loadAverageAtEnd"] = bench_common.load_average()
    return Outcome(facts, measured, len(prompts), len(rows))


def report(outcome: Outcome, settings: Settings, adapter: str) -> dict[str, Any]:
    """The JSON document: machine, settings and one row per baseline and target, ratios included."""
    baselines = {m.name: m for m in outcome.measured if m.engine == "transformers"}
    rows = []
    for m in outcome.measured:
        base = baselines[m.baseline]
        rows.append(
            {
                "name": m.name,
                "engine": m.engine,
                "device": m.device,
                "baseline": m.baseline,
                "prefillTokensPerSecond": round(m.prefill_tokens_per_second, 2),
                "decodeTokensPerSecond": round(m.decode_tokens_per_second, 2),
                "decodeRatio": round(m.decode_tokens_per_second / base.decode_tokens_per_second, 3),
                "accuracy": round(m.accuracy, 4),
                "accuracyDeltaPoints": round(100 * (m.accuracy - base.accuracy), 2),
                "prefillTokensPerSecondByPrompt": [round(x, 2) for x in m.speed.prefill],
                "decodeTokensPerSecondByPrompt": [round(x, 2) for x in m.speed.decode],
                "buildSeconds": None if m.build_seconds is None else round(m.build_seconds, 1),
                "int4": m.int4,
            }
        )
    return {
        "machine": outcome.machine,
        "settings": {
            "model": "tiny-random-llama" if settings.smoke else "SmolLM2-135M-Instruct",
            "adapter": adapter,
            "targets": list(settings.targets),
            "prompts": outcome.timed_prompts,
            "newTokens": settings.new_tokens,
            "accuracyRows": outcome.accuracy_rows,
            "accuracyNewTokens": ACCURACY_NEW_TOKENS,
            "threads": settings.threads,
            "int4Overrides": settings.int4_overrides,
        },
        "rows": rows,
    }


def print_report(doc: dict[str, Any]) -> None:
    machine, settings = doc["machine"], doc["settings"]
    print(
        f"\nmachine: {machine['cpu']} ({machine['arch']}), {machine['cpus']} CPUs, "
        f"{settings['threads']} threads for torch and onnxruntime, load average {machine['loadAverage']} "
        f"at the start, {machine['loadAverageAtEnd']} at the end"
        + (f", GPU {machine['gpu']}" if "gpu" in machine else "")
    )
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items()))
    print(
        f"model {settings['model']}; {settings['prompts']} prompts x {settings['newTokens']} new tokens "
        f"(median over prompts); accuracy: first word on {settings['accuracyRows']} held-out rows\n"
    )
    header = (
        f"{'target':<24} {'prefill tok/s':>13} {'decode tok/s':>12} {'decode ratio':>12} "
        f"{'accuracy':>8} {'Δ points':>8}  baseline"
    )
    print(header)
    for row in doc["rows"]:
        print(
            f"{row['name']:<24} {row['prefillTokensPerSecond']:>13.1f} {row['decodeTokensPerSecond']:>12.1f} "
            f"{row['decodeRatio']:>11.2f}x {row['accuracy']:>8.3f} {row['accuracyDeltaPoints']:>+8.1f}  "
            f"{row['baseline']}"
        )


# ---- command line ----------------------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, Any]:
    """KEY=VALUE with a JSON value where it parses as one (blockSize=64), else the string (algorithm=rtn)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def default_targets() -> tuple[str, ...]:
    return CPU_TARGETS + (CUDA_TARGETS if bench_common.cuda_available() and ort_cuda_available() else ())


def parse_settings(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--targets", help="comma-separated precision-provider names (default: int4-cpu,int8-cpu,fp32-cpu, "
        "and fp16-cuda where CUDA and onnxruntime-genai-cuda are there)")  # fmt: skip
    add("--adapter", type=Path, help="a trained tone LoRA adapter folder (default: train one)")
    add("--workdir", type=Path, help="where models are trained and built (default: a temp dir)")
    add("--prompts", type=int, help="timed held-out prompts (default 12; smoke 2)")
    add("--new-tokens", type=int, help="new tokens per timed prompt (default 32; smoke 4)")
    add("--accuracy-rows", type=int, help="held-out rows scored (default all; smoke 4)")
    add("--int4", type=key_value, action="append", default=[], metavar="KEY=VALUE",
        help="an int4 setting by its API name (e.g. blockSize=64), over the API default")  # fmt: skip
    add("--threads", type=int, help="CPU threads of torch and onnxruntime (default: torch's count)")
    add("--json", type=Path, help="also write the results to this file")
    add("--smoke", action="store_true", help="tiny random Llama, 2 prompts x 4 tokens, fp32-cpu only")
    args = parser.parse_args(argv)

    import torch

    smoke = args.smoke
    if args.targets:
        targets = tuple(args.targets.split(","))
    else:
        targets = ("fp32-cpu",) if smoke else default_targets()
    settings = Settings(
        smoke=smoke,
        targets=targets,
        prompts=args.prompts or (2 if smoke else 12),
        new_tokens=args.new_tokens or (4 if smoke else 32),
        accuracy_rows=args.accuracy_rows or (4 if smoke else None),
        threads=args.threads or torch.get_num_threads(),
        int4_overrides=dict(args.int4),
    )
    try:
        for name in settings.targets:
            export_target(name, settings.int4_overrides)
    except ValueError as exc:  # pydantic's ValidationError is one
        parser.error(f"--targets/--int4: {exc}")
    if settings.new_tokens < 2:
        parser.error("--new-tokens must be at least 2 (decode speed is timed after the first new token)")
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubetune-decode-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work dir {workdir}; targets {', '.join(settings.targets)}", flush=True)
    outcome = run(settings, workdir, args.adapter)
    doc = report(outcome, settings, str(args.adapter) if args.adapter else "trained in this run")
    print_report(doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

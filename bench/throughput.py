"""Training throughput against what users pick instead, side by side in one run, with each case's MFU.

    PYTHONPATH=hack uv run python bench/throughput.py                  # both workloads, every case
    PYTHONPATH=hack uv run python bench/throughput.py --model tiny --cases hf-dynamic,trl,kubetune --steps 2
    PYTHONPATH=hack uv run python bench/throughput.py --repeats 3 --cases olive,kubetune   # rounds, medians
    PYTHONPATH=hack uv run python bench/throughput.py --precision bf16 --cases hf-dynamic,trl,kubetune  # GPU

Cases (each in its own process, so peak RSS is its own): HF Trainer + PEFT with dynamic padding, TRL's
SFTTrainer with packing and padding_free, Olive's `olive finetune` in its own environment (made on first
use with uv, at this project's torch/transformers/peft/accelerate versions), and Kubetune (with and
without its speed-ups: kubetune-plain). Workloads: bench/workloads.py. Settings: bench/train_cases.py.

Before the cases, a matmul microbenchmark measures the machine's peak at the training dtype; each case's
MFU is its model FLOPs per real token (bench/flops.py) x real tokens/s / that peak; "computed" is the same
over the positions the case computes (fewer than its real tokens where Kubetune computes a prefix the
examples share once), how much of the peak the work done uses. Prints one table per
workload and Kubetune's ratio to the best baseline; --json writes every figure and loss curve. Separate
processes on a shared machine vary by 10-20% from run to run: --repeats N runs every case N times (in
reverse order every other round), reports each case's median round and Kubetune's ratio within each
round. --precision bf16 trains every case in bf16 mixed precision (train_cases.py says how) and measures
the peak in bf16: the GPU comparison; fp32 is the CPU's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")

import flops  # noqa: E402  (bench/ is on sys.path when a script in it runs)
import train_cases  # noqa: E402
import workloads  # noqa: E402

CASES = ("hf-dynamic", "trl", "olive", "kubetune-plain", "kubetune")
BASELINES = ("hf-dynamic", "trl", "olive")
OLIVE_VERSION = "0.13.0"
# Olive imports these without declaring them; the rest is pinned to this project's versions.
OLIVE_EXTRA = ("requests", "datasets")
OLIVE_SAME_AS_PROJECT = ("torch", "transformers", "peft", "accelerate")
# Olive's --torch_dtype for each precision: the dtype its LoRA pass loads the base in.
OLIVE_DTYPE = {"fp32": "float32", "bf16": "bfloat16"}
OLIVE_ENV = Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache/kubetune")) / "bench" / "olive-venv"
LABELS = {
    "hf-dynamic": "HF Trainer + PEFT, dynamic padding",
    "trl": "TRL SFTTrainer, packing + padding_free",
    "olive": f"Olive {OLIVE_VERSION} olive finetune",
    "kubetune-plain": "Kubetune, packing, no speed-ups",
    "kubetune": "Kubetune",
}


def model_dir(name: str) -> Path:
    from devcluster import model

    if name == "smollm2":
        return model.smollm2(verify=False)
    return model.write_tiny_llama(Path(tempfile.mkdtemp(prefix="bench-tiny-")))


def olive_python() -> Path:
    """Olive's own environment: a uv venv beside this project's caches, made once."""
    python = OLIVE_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(OLIVE_ENV)], check=True)
        pins = [f"{name}=={metadata.version(name)}" for name in OLIVE_SAME_AS_PROJECT]
        packages = [f"olive-ai[finetune]=={OLIVE_VERSION}", *OLIVE_EXTRA, *pins]
        # Compiled once here, so no run of the case compiles PyTorch's sources again on import.
        install = ["uv", "pip", "install", "--quiet", "--compile-bytecode", "--python", str(python)]
        subprocess.run([*install, *packages], check=True)
    return python


def olive_command(
    workload: workloads.Workload, folder: Path, work: Path, steps: int, warmup: int
) -> list[str]:
    data = workload.write_jsonl(work / f"{workload.name}.jsonl")
    text = ["--text_template", workload.template] if workload.template else ["--use_chat_template"]
    lora = train_cases.LORA
    return [
        str(olive_python()),
        str(Path(__file__).parent / "olive_case.py"),
        f"--steps={steps}",
        f"--warmup={warmup}",
        "--",
        *["-m", str(folder), "-d", "json", "--data_files", str(data), "--train_split", "train", *text],
        *["--max_seq_len", str(train_cases.MAX_SEQ_LENGTH), "--batch_size", str(train_cases.BATCH)],
        *["--method", "lora", "--lora_r", str(lora["r"]), "--lora_alpha", str(lora["alpha"])],
        *["--target_modules", ",".join(lora["targets"]), "--torch_dtype", OLIVE_DTYPE[train_cases.PRECISION]],
        *["--learning_rate", str(train_cases.LEARNING_RATE), "--seed", str(train_cases.SEED)],
        # Olive's default turns gradient checkpointing on; off is its fastest setting.
        *["--logging_steps", "1", "--gradient_checkpointing", "False"],
        *["-o", str(work / "olive-out"), "--disable_telemetry", "--log_level", "3"],
    ]


def run_child(cmd: list[str], cwd: Path | None = None) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def run_case(case: str, workload: str, folder: Path, steps: int, warmup: int) -> dict[str, Any]:
    if case == "olive":
        work = Path(tempfile.mkdtemp(prefix="bench-olive-"))
        # In its own folder: Olive writes its cache (.olive-cache) under the working directory.
        result = run_child(olive_command(workloads.load(workload), folder, work, steps, warmup), cwd=work)
        return {**result, "precision": train_cases.PRECISION}
    own = [f"--case={case}", f"--workload={workload}", f"--model-dir={folder}", f"--steps={steps}"]
    own += [f"--warmup={warmup}", f"--max-seq-length={train_cases.MAX_SEQ_LENGTH}"]
    own += [f"--examples-per-step={train_cases.EXAMPLES_PER_STEP}", f"--precision={train_cases.PRECISION}"]
    return run_child([sys.executable, __file__, *own])


def example_lengths(folder: Path, workload: workloads.Workload) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if workload.template is not None:
        lengths = [len(tokenizer(workload.template.format_map(r))["input_ids"]) + 1 for r in workload.rows]
    else:
        chats = [r["messages"] for r in workload.rows]
        encoded: list[Any] = [
            tokenizer.apply_chat_template(c, tokenize=True, return_dict=True) for c in chats
        ]
        lengths = [len(e["input_ids"]) for e in encoded]
    return [min(n, train_cases.MAX_SEQ_LENGTH) for n in lengths]


def flops_per_token(folder: Path, lengths: list[int]) -> float:
    """LoRA FLOPs per real token of examples of these lengths (their average attention context)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    lora = train_cases.LORA
    return flops.per_token(config, "lora", lora["r"], lora["targets"], flops.mean_context(lengths)).total


def report(workload: str, results: dict[str, dict[str, Any]], examples: int) -> list[str]:
    lines = [
        f"\n{workload}: {workloads.load(workload).description}; {examples} examples a step where "
        "a case batches whole examples",
        f"{'case':<40} {'real tok/s':>10} {'s/step':>7} {'tok/step':>8} {'peak RSS':>9} {'MFU':>6} "
        f"{'computed':>8}  loss",
    ]
    for case, r in results.items():
        if "error" in r:
            lines.append(f"{LABELS[case]:<40} failed: {r['error'].splitlines()[0]}")
            continue
        loss = f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}" if r["losses"] else "-"
        spread = r.get("rounds", [])
        rounds = f"  rounds {min(spread)}-{max(spread)} tok/s" if len(spread) > 1 else ""
        lines.append(
            f"{LABELS[case]:<40} {r['realTokensPerSecond']:>10} {r['secondsPerStep']:>7} "
            f"{r['realTokensPerStep']:>8} {r['peakRssMiB']:>5} MiB {r['mfu'] * 100:>5.1f}% "
            f"{r['computedMfu'] * 100:>7.1f}%  {loss}{rounds}"
        )
    best, ratio = best_baseline(results), kubetune_ratio(results)
    if best is not None and ratio is not None:
        lines.append(f"ratio (real tokens/s, Kubetune / best baseline = {LABELS[best]}): {ratio:.2f}")
    return lines


def median_round(case: str, rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The case's round with the median real tokens/s (the lower middle one of an even count), its
    whole record, with every round's figure."""
    runs = [r[case] for r in rounds if "error" not in r[case]]
    if not runs:
        return rounds[0][case]
    ordered = sorted(runs, key=lambda r: r["realTokensPerSecond"])
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [r["realTokensPerSecond"] for r in runs]}


def best_baseline(results: dict[str, dict[str, Any]]) -> str | None:
    """The baseline case with the most real tokens/s, of those that ran."""
    ran = [c for c, r in results.items() if c in BASELINES and "error" not in r]
    return max(ran, key=lambda c: results[c]["realTokensPerSecond"]) if ran else None


def kubetune_ratio(results: dict[str, dict[str, Any]]) -> float | None:
    """Kubetune's real tokens/s over the fastest baseline's, within one round (or one table)."""
    best, own = best_baseline(results), results.get("kubetune", {})
    if best is None or "error" in own or "realTokensPerSecond" not in own:
        return None
    return float(own["realTokensPerSecond"]) / results[best]["realTokensPerSecond"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--workloads", default=",".join(workloads.WORKLOADS))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--json", type=Path, help="write every figure and loss curve here")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every case, in reverse order every other round; each case reports its median round",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(OLIVE_DTYPE),
        default=train_cases.PRECISION,
        help="every case's training precision and the peak's dtype (bf16: mixed precision, for a GPU)",
    )
    parser.add_argument(
        "--max-seq-length",
        type=int,
        default=train_cases.MAX_SEQ_LENGTH,
        help="the tiny model's tokenizer needs 512",
    )
    # One case in a child process.
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--examples-per-step", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    train_cases.MAX_SEQ_LENGTH = args.max_seq_length
    train_cases.PRECISION = args.precision
    if args.case:
        train_cases.EXAMPLES_PER_STEP = args.examples_per_step
        workload = workloads.load(args.workload)
        result = train_cases.run(args.case, workload, args.model_dir, args.steps, args.warmup)
        print("RESULT " + json.dumps(result))
        return 0

    folder = model_dir(args.model)
    peak, device = flops.peak_flops(args.precision), flops.device_name()
    print(
        f"model {args.model} ({folder.name}); {device}, {os.cpu_count()} CPUs; {args.precision} "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s; {args.warmup} warm-up + {args.steps} timed steps per case",
        flush=True,
    )
    everything: dict[str, Any] = {
        "model": args.model,
        "precision": args.precision,
        "device": device,
        "peakFlops": peak,
        "workloads": {},
    }
    failed = False
    for workload in args.workloads.split(","):
        lengths = example_lengths(folder, workloads.load(workload))
        per_token = flops_per_token(folder, lengths)
        per_step = train_cases.BATCH * train_cases.MAX_SEQ_LENGTH
        train_cases.EXAMPLES_PER_STEP = max(1, round(per_step * len(lengths) / sum(lengths)))
        cases = args.cases.split(",")
        rounds: list[dict[str, dict[str, Any]]] = []
        for repeat in range(args.repeats):
            measured: dict[str, dict[str, Any]] = {}
            for case in cases if repeat % 2 == 0 else list(reversed(cases)):
                try:
                    r = run_case(case, workload, folder, args.steps, args.warmup)
                    r["mfu"] = per_token * r["realTokensPerSecond"] / peak
                    computed = r.get("computedTokensPerSecond", r["realTokensPerSecond"])
                    r["computedMfu"] = per_token * computed / peak
                except RuntimeError as e:
                    r, failed = {"error": str(e)}, True
                measured[case] = r
                print(f"{workload} {case} (round {repeat + 1}): {json.dumps(r)[:400]}", flush=True)
            rounds.append(measured)
        results = {case: median_round(case, rounds) for case in cases}
        everything["workloads"][workload] = {
            "flopsPerToken": per_token,
            "examplesPerStep": train_cases.EXAMPLES_PER_STEP,
            "cases": results,
            "roundRatios": [r for r in map(kubetune_ratio, rounds) if r is not None],
        }
        print("\n".join(report(workload, results, train_cases.EXAMPLES_PER_STEP)), flush=True)
        if args.repeats > 1:
            ratios = ", ".join(f"{r:.2f}" for r in everything["workloads"][workload]["roundRatios"])
            print(f"Kubetune / best baseline of each round: {ratios}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

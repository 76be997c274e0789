"""Which int4 settings of the ONNX export keep held-out accuracy: each setting built from the same
fine-tuned weights and scored on the same held-out rows, as the exporter and its gate score them, on
two tasks in one run.

    PYTHONPATH=hack uv run --frozen python bench/int4_settings.py [--tasks tone,intent]
        [--settings default,int8,...] [--workdir DIR] [--tolerance-points 2] [--json FILE]
    PYTHONPATH=hack uv run --frozen python bench/int4_settings.py --smoke --json out.json  # tiny model

Per task (tone and intent: examples/finetunejob-smollm2-<task>.yaml, see bench_common.py):
1. The example's LoRA adapter on SmolLM2-135M-Instruct, trained by the trainer's train() on local copies
   of the example's files; with --workdir a run trained there before is reused.
2. merge_adapter folds it into the fp32 base, and PyTorch answers the held-out rows greedily
   (quality.held_out: export.evalSamples rows of the eval file, at most export.maxNewTokens new tokens):
   the reference exact match.
3. Per setting (SETTINGS below; --settings picks some by name): build_onnx builds the merged weights as
   that ExportTarget, and build_lora_base + write_adapter_file the swappable base+adapter pair; both are
   measured by quality.measure on the same rows: exactMatch, parityTokenAgreement (share of the first
   export.parityTokens tokens equal to PyTorch's) and decodeTokensPerSecond (generated tokens over the
   time answering, model load included); the pair's figures carry the prefix `adapter`, as in
   status.exportTargets. A setting that resolves to the same ExportTarget as one measured before
   (`default` and the table row it equals) is reported from that one's figures.

Prints one table per task (exact match and its difference from PyTorch in points for the merged model
and for the pair, token agreement, decode tokens/s, build seconds) and the settings that lose at most
--tolerance-points against PyTorch on every task, for the merged model and for the pair. --json writes
the same, with every figure and the machine's facts (CPU, cores, threads, load averages, libraries).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
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
    from kubetune_api import ExportTarget, TrainerInput
    from kubetune_trainer.quality import HeldOut

LIBRARIES = ("torch", "transformers", "peft", "onnx", "onnxruntime", "onnxruntime-genai")
TOLERANCE_POINTS = 2.0
SMOKE_SETTINGS = ("default", "rtn-bs32")


@dataclass(frozen=True)
class Setting:
    """One export precision and, for int4, Int4Spec fields by their API names over the API defaults."""

    name: str
    precision: str
    int4: dict[str, Any] = field(default_factory=dict)

    def target(self) -> ExportTarget:
        from kubetune_api import ExportTarget

        fields: dict[str, Any] = {"precision": self.precision, "executionProvider": "cpu"}
        if self.int4:
            fields["int4"] = self.int4
        return ExportTarget.model_validate(fields)


def int4_fields(
    algorithm: str, block_size: int, last_matmul: str = "int4", mixed: str = "int4"
) -> dict[str, Any]:
    """Every Int4Spec field but accuracyLevel (the builder's default), so a row never follows the API's
    defaults when they change; only `default` does."""
    return {"algorithm": algorithm, "blockSize": block_size, "lastMatmul": last_matmul, "mixedLayers": mixed}


SETTINGS: tuple[Setting, ...] = (
    Setting("default", "int4"),  # ExportTarget().int4: the API's current default
    Setting("int8", "int8"),  # the reference: int8 weights throughout
    Setting("rtn-bs32", "int4", int4_fields("rtn", 32)),
    Setting("rtn-bs16", "int4", int4_fields("rtn", 16)),
    Setting("rtn-bs16-last8", "int4", int4_fields("rtn", 16, last_matmul="int8")),
    Setting("rtn-bs16-last8-mixed8", "int4", int4_fields("rtn", 16, last_matmul="int8", mixed="int8")),
    Setting("kquant-bs32", "int4", int4_fields("k_quant", 32)),
    Setting("kquant-bs32-last8", "int4", int4_fields("k_quant", 32, last_matmul="int8")),
    Setting("kquant-bs32-last8-mixed8", "int4", int4_fields("k_quant", 32, last_matmul="int8", mixed="int8")),
    Setting("kquant-bs16-last8", "int4", int4_fields("k_quant", 16, last_matmul="int8")),
    Setting("kquant-bs16-last8-mixed8", "int4", int4_fields("k_quant", 16, last_matmul="int8", mixed="int8")),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Options:
    smoke: bool
    tasks: tuple[str, ...]
    settings: tuple[Setting, ...]
    tolerance_points: float
    workdir: Path


# ---- measuring ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """A task's trained weights: the fp32 base, its LoRA adapter and the two merged (an HF folder)."""

    base_dir: Path
    adapter_dir: Path
    merged_dir: Path


def pytorch_reference(job: TrainerInput, weights: Weights, workdir: Path) -> tuple[HeldOut, float]:
    """The merged model's greedy answers to the held-out rows, as the exporter takes them (the eval file;
    the training rows when the spec holds none out), and the seconds they took."""
    from kubetune_trainer import quality
    from kubetune_trainer.onnx_build import merge_adapter
    from kubetune_trainer.storage import Storage
    from kubetune_trainer.train import fetch_dataset

    model, tokenizer = merge_adapter(weights.base_dir, weights.adapter_dir, weights.merged_dir)
    data = fetch_dataset(job.spec.dataset, Storage(), workdir)
    start = time.perf_counter()
    reference = quality.held_out(job, model, tokenizer, data.splits.eval or data.splits.train, data.format)
    return reference, time.perf_counter() - start


def timed_build(build: Callable[..., Path], *args: Any) -> tuple[Path, float]:
    start = time.perf_counter()
    path = build(*args)
    return path, time.perf_counter() - start


def measure_setting(
    job: TrainerInput, reference: HeldOut, target: ExportTarget, weights: Weights, out: Path
) -> dict[str, Any]:
    """The merged model and the base+adapter pair built as `target`, each measured on the held-out rows."""
    from kubetune_trainer import quality
    from kubetune_trainer.onnx_build import build_lora_base, build_onnx, write_adapter_file

    onnx_dir, build_seconds = timed_build(
        build_onnx, target, weights.merged_dir, out / "merged", out / "cache"
    )
    metrics = quality.measure(job, reference, onnx_dir)
    base_onnx, adapter_build_seconds = timed_build(
        build_lora_base, target, weights.base_dir, weights.adapter_dir, out / "pair" / "base", out / "cache"
    )
    adapter_file = write_adapter_file(weights.adapter_dir, out / "pair" / "adapter.onnx_adapter")
    metrics.update(quality.with_prefix("adapter", quality.measure(job, reference, base_onnx, adapter_file)))
    shutil.rmtree(out, ignore_errors=True)  # a SmolLM2 model is hundreds of MB; the figures are kept
    return {
        "metrics": metrics,
        "buildSeconds": round(build_seconds, 1),
        "adapterBuildSeconds": round(adapter_build_seconds, 1),
    }


def setting_row(
    setting: Setting, target: ExportTarget, measured: dict[str, Any], torch_exact: float
) -> dict[str, Any]:
    """One setting's JSON row: its figures and their differences from PyTorch in points."""
    metrics = measured["metrics"]
    return {
        "setting": setting.name,
        "precision": target.precision,
        "int4": target.int4.model_dump(mode="json", by_alias=True) if target.precision == "int4" else None,
        **measured,
        "exactMatchDeltaPoints": round(100 * (metrics["exactMatch"] - torch_exact), 2),
        "adapterExactMatchDeltaPoints": round(100 * (metrics["adapterExactMatch"] - torch_exact), 2),
    }


def run_task(task: bench_common.Task, base_dir: Path, options: Options) -> dict[str, Any]:
    """Train (or reuse) the task's adapter, take PyTorch's answers, and build and measure every setting."""
    workdir = options.workdir / task.name
    job = bench_common.trainer_input(task, base_dir, workdir, options.smoke)
    weights = Weights(base_dir, bench_common.train_adapter(job, workdir), workdir / "merged")
    reference, seconds = pytorch_reference(job, weights, workdir)
    if not reference.prompts:
        raise SystemExit(f"{task.name}: no held-out rows to measure on (export.evalSamples is 0)")
    torch_exact = reference.torch_metrics["exactMatch"]
    print(
        f"{task.name}: PyTorch fp32 exact match {torch_exact:.3f} on {len(reference.prompts)} rows",
        flush=True,
    )

    def measure(setting: Setting, target: ExportTarget) -> dict[str, Any]:
        measured = measure_setting(job, reference, target, weights, workdir / "onnx" / setting.name)
        print(f"{task.name}: measured {setting.name}: {json.dumps(measured['metrics'])}", flush=True)
        return measured

    return {
        "task": task.name,
        "example": str(task.example.relative_to(REPO)),
        "runId": job.run.run_id,
        "heldOutRows": len(reference.prompts),
        "maxNewTokens": job.spec.export.max_new_tokens,
        "parityTokens": job.spec.export.parity_tokens,
        "pytorch": {**reference.torch_metrics, "seconds": round(seconds, 2)},
        "rows": setting_rows(options.settings, measure, torch_exact),
    }


def setting_rows(
    settings: tuple[Setting, ...],
    measure: Callable[[Setting, ExportTarget], dict[str, Any]],
    torch_exact: float,
) -> list[dict[str, Any]]:
    """Every setting's row; a setting with the ExportTarget of an earlier one is not built again but
    reported from that one's figures, with sameAs naming it."""
    rows: list[dict[str, Any]] = []
    first_by_target: dict[str, tuple[str, dict[str, Any]]] = {}
    for setting in settings:
        target = setting.target()
        key = json.dumps(target.model_dump(mode="json"), sort_keys=True)
        same_as = first_by_target[key][0] if key in first_by_target else None
        measured = first_by_target[key][1] if key in first_by_target else measure(setting, target)
        first_by_target.setdefault(key, (setting.name, measured))
        rows.append({**setting_row(setting, target, measured, torch_exact), "sameAs": same_as})
    return rows


def within_tolerance(tasks: list[dict[str, Any]], tolerance_points: float) -> dict[str, list[str]]:
    """The settings losing at most tolerance_points against PyTorch on every task (a gain is within)."""

    def keeps(delta_field: str) -> list[str]:
        names = [row["setting"] for row in tasks[0]["rows"]] if tasks else []
        return [
            name
            for name in names
            if all(
                row[delta_field] >= -tolerance_points - 1e-9
                for task in tasks
                for row in task["rows"]
                if row["setting"] == name
            )
        ]

    merged, pair = keeps("exactMatchDeltaPoints"), keeps("adapterExactMatchDeltaPoints")
    return {"merged": merged, "pair": pair, "both": [name for name in merged if name in pair]}


def run(options: Options) -> dict[str, Any]:
    import torch

    facts = bench_common.machine_facts(torch.get_num_threads(), LIBRARIES)
    facts["onnxruntimeThreads"] = "onnxruntime-genai's default (quality.measure sets none)"
    base_dir = bench_common.base_model_dir(options.workdir, options.smoke)
    tasks = [run_task(bench_common.TASKS[name], base_dir, options) for name in options.tasks]
    facts["loadAverageAtEnd"] = bench_common.load_average()
    return {
        "machine": facts,
        "run": {
            "model": "tiny-random-llama" if options.smoke else "SmolLM2-135M-Instruct",
            "tasks": list(options.tasks),
            "settings": [s.name for s in options.settings],
            "tolerancePoints": options.tolerance_points,
        },
        "tasks": tasks,
        "withinTolerance": within_tolerance(tasks, options.tolerance_points),
    }


# ---- report ------------------------------------------------------------------------------------------------


def describe(setting: Setting) -> str:
    target = setting.target()
    if target.precision != "int4":
        return target.precision
    i = target.int4
    fields = (
        f"int4 {i.algorithm} block {i.block_size}, lastMatmul {i.last_matmul}, mixedLayers {i.mixed_layers}"
    )
    return fields if setting.int4 else f"{fields} (the API's default)"


COLUMNS = (
    ("setting", 26, "setting", "s"),
    ("exact", 6, "exactMatch", ".3f"),
    ("Δ pts", 6, "exactMatchDeltaPoints", "+.1f"),
    ("pair exact", 10, "adapterExactMatch", ".3f"),
    ("pair Δ", 6, "adapterExactMatchDeltaPoints", "+.1f"),
    ("tok agree", 9, "parityTokenAgreement", ".3f"),
    ("pair agree", 10, "adapterParityTokenAgreement", ".3f"),
    ("tok/s", 7, "decodeTokensPerSecond", ".1f"),
    ("pair tok/s", 10, "adapterDecodeTokensPerSecond", ".1f"),
    ("build s", 7, "buildSeconds", ".1f"),
    ("pair build s", 12, "adapterBuildSeconds", ".1f"),
)


def table_cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key, row["metrics"].get(key))
    return "-" if value is None else format(value, fmt)


def aligned(cells: list[str]) -> str:
    """The first column left-aligned, the others right-aligned, at the widths of COLUMNS."""
    widths = [width for _, width, _, _ in COLUMNS]
    return " ".join(
        f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def print_task(task: dict[str, Any]) -> None:
    torch_figures = task["pytorch"]
    print(
        f"\n{task['task']} ({task['example']}): PyTorch fp32 exact match {torch_figures['exactMatch']:.3f} "
        f"on {task['heldOutRows']} held-out rows ({torch_figures['seconds']:.1f} s); "
        "pair: the shared base + .onnx_adapter"
    )
    print(aligned([title for title, _, _, _ in COLUMNS]))
    for row in task["rows"]:
        line = aligned([table_cell(row, key, fmt) for _, _, key, fmt in COLUMNS])
        print(line + (f"  (= {row['sameAs']})" if row["sameAs"] else ""))


def listed(names: list[str]) -> str:
    return ", ".join(names) or "none"


def print_report(doc: dict[str, Any], settings: tuple[Setting, ...]) -> None:
    machine, run_facts = doc["machine"], doc["run"]
    print(
        f"\nmachine: {machine['cpu']} ({machine['arch']}), {machine['cpus']} CPUs, torch threads "
        f"{machine['threads']}, load average {machine['loadAverage']} at the start, "
        f"{machine['loadAverageAtEnd']} at the end"
    )
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in machine["libraries"].items()))
    print(f"model {run_facts['model']}; settings:")
    for setting in settings:
        print(f"  {setting.name:<26} {describe(setting)}")
    for task in doc["tasks"]:
        print_task(task)
    within = doc["withinTolerance"]
    merged_only = [n for n in within["merged"] if n not in within["both"]]
    pair_only = [n for n in within["pair"] if n not in within["both"]]
    print(
        f"\nwithin {run_facts['tolerancePoints']:g} points of PyTorch on every task "
        f"({', '.join(run_facts['tasks'])}), merged model and base+adapter pair: {listed(within['both'])} "
        f"(merged model only: {listed(merged_only)}; pair only: {listed(pair_only)})"
    )


# ---- command line ------------------------------------------------------------------------------------------


def names(text: str, known: dict[str, Any], what: str) -> tuple[str, ...]:
    picked = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in picked if n not in known]
    if unknown or not picked:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; known: {', '.join(known)}"
        )
    return picked


def parse_options(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    epilog = "settings:\n" + "\n".join(f"  {s.name:<26} {describe(s)}" for s in SETTINGS)
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        epilog=epilog,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add = parser.add_argument
    add("--tasks", type=lambda t: names(t, bench_common.TASKS, "task"), help="comma-separated (default all)")
    add("--settings", type=lambda t: names(t, SETTINGS_BY_NAME, "setting"),
        help=f"comma-separated names (default all; smoke {','.join(SMOKE_SETTINGS)})")  # fmt: skip
    add("--workdir", type=Path, help="where adapters are trained and models built (default: a temp dir)")
    add("--tolerance-points", type=float, default=TOLERANCE_POINTS, help="the most a setting may lose")
    add("--json", type=Path, help="also write the results to this file")
    add("--smoke", action="store_true", help="tiny random Llama, 2 steps, 2 held-out rows, 2 settings")
    args = parser.parse_args(argv)
    settings = args.settings or (SMOKE_SETTINGS if args.smoke else tuple(SETTINGS_BY_NAME))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubetune-int4-settings-"))
    options = Options(
        smoke=args.smoke,
        tasks=args.tasks or tuple(bench_common.TASKS),
        settings=tuple(SETTINGS_BY_NAME[name] for name in settings),
        tolerance_points=args.tolerance_points,
        workdir=workdir,
    )
    return options, args


def main(argv: list[str] | None = None) -> int:
    options, args = parse_options(argv)
    options.workdir.mkdir(parents=True, exist_ok=True)
    print(f"work dir {options.workdir}; tasks {', '.join(options.tasks)}", flush=True)
    doc = run(options)
    print_report(doc, options.settings)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

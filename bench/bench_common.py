"""What the benchmarks in bench/ share: the example tasks, their adapters trained by the trainer itself,
their held-out prompts, and the facts about the machine a run was measured on.

    import bench_common  # bench/ is on sys.path when a script in it runs

    base_dir = bench_common.base_model_dir(workdir, smoke=False)  # SmolLM2-135M-Instruct
    job = bench_common.trainer_input(bench_common.TASKS["tone"], base_dir, workdir / "tone", smoke=False)
    adapter = bench_common.train_adapter(job, workdir / "tone")  # reused when workdir holds the run
    facts = bench_common.machine_facts(threads=4, libraries=("torch", "onnxruntime-genai"))

A task's trainer input is its example FineTuneJob (examples/finetunejob-smollm2-<task>.yaml) read with
the API's own model, with only the URIs replaced by local paths (the base model folder, the files under
examples/data/<task>/) and the run's output and shared-base roots in local folders. So a benchmark
measures the adapter the example trains. --smoke shrinks it to a few steps on the tiny random Llama.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubetune_api import TrainerInput
    from kubetune_trainer.data import Row
    from kubetune_trainer.generation import Prompt

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Smoke runs: the example's settings, cut to seconds on the tiny random Llama (2 held-out rows for the
# export's checks). Everything else stays as the example has it.
SMOKE_EDITS: dict[str, dict[str, Any]] = {
    "training": {
        "maxSteps": 2,
        "batchSize": 4,
        "maxSeqLength": 64,
        "loggingSteps": 1,
        "evalSteps": 2,
        "saveSteps": 2,
    },
    "evaluation": {"samples": 4},
    "export": {"evalSamples": 2},
}


# ---- tasks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One example task: its FineTuneJob and the folder holding its dataset files."""

    name: str
    example: Path
    data_dir: Path


TASKS: dict[str, Task] = {
    name: Task(name, EXAMPLES / f"finetunejob-smollm2-{name}.yaml", EXAMPLES / "data" / name)
    for name in ("tone", "intent")
}


def local_uri(uri: str, data_dir: Path) -> str:
    """The example's dataset URI (s3://.../<task>/train.jsonl) as the same file in examples/data/<task>/."""
    path = data_dir / Path(uri).name
    if not path.is_file():
        raise FileNotFoundError(f"{uri} has no local copy at {path}")
    return str(path)


def example_body(task: Task, base_dir: Path, smoke: bool) -> dict[str, Any]:
    """The example FineTuneJob as a dict, reading the base model and the data from local paths."""
    import yaml

    body: dict[str, Any] = yaml.safe_load(task.example.read_text())
    spec = body["spec"]
    spec["baseModel"]["uri"] = str(base_dir)
    dataset = spec["dataset"]
    for key in ("trainUri", "evalUri"):
        if key in dataset:
            dataset[key] = local_uri(dataset[key], task.data_dir)
    if smoke:
        for section, edits in SMOKE_EDITS.items():
            spec.setdefault(section, {}).update(edits)
    return body


def trainer_input(task: Task, base_dir: Path, workdir: Path, smoke: bool) -> TrainerInput:
    """What the operator would hand the trainer for the example, with the run's files under workdir.

    The run id is the spec hash, as the operator makes it: a changed example trains a new adapter."""
    from kubetune_api import FineTuneJob, RunContext, TrainerInput

    job = FineTuneJob.from_k8s(example_body(task, base_dir, smoke))
    run = RunContext(
        name=str(job.metadata.name),
        namespace="bench",
        run_id=job.spec_hash(),
        output_root=str(workdir / "run"),
        shared_bases_root=str(workdir / "bases"),
    )
    return TrainerInput(spec=job.spec, run=run)


def base_model_dir(workdir: Path, smoke: bool) -> Path:
    """SmolLM2-135M-Instruct (converted once into the local model cache), or the tiny random Llama."""
    from devcluster import model

    if smoke:
        return model.write_tiny_llama(workdir / "tiny-llama")
    return model.smollm2(verify=False)


def train_adapter(job: TrainerInput, workdir: Path) -> Path:
    """The run's LoRA adapter folder, trained by the trainer's train(); a run that finished before in
    workdir is reported by train() itself from its stored result, without training again."""
    from kubetune_api.layout import ADAPTER_DIR
    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    adapter = Path(job.run.layout.folder(ADAPTER_DIR))
    trained_before = Path(job.run.layout.result).is_file()
    start = time.perf_counter()
    train(job, workdir / "train", LoggingSink(min_interval=60))
    if trained_before:
        print(f"reusing the adapter trained before in {adapter}", flush=True)
    else:
        print(f"adapter trained in {time.perf_counter() - start:.1f} s: {adapter}", flush=True)
    return adapter


def held_out_rows(job: TrainerInput) -> list[Row]:
    """The rows of the example's eval file, in file order."""
    from kubetune_trainer.data import read_rows

    eval_uri = job.spec.dataset.eval_uri
    if eval_uri is None:
        raise ValueError("the example has no dataset.evalUri")
    return read_rows(Path(eval_uri))


def held_out_prompts(job: TrainerInput, tokenizer: Any) -> list[Prompt]:
    """The eval rows as prompts (the template up to the answer field) and their expected answers."""
    from kubetune_trainer.generation import prompts_from_rows

    return prompts_from_rows(job.spec.dataset, "text", tokenizer, held_out_rows(job))


# ---- machine ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(libraries: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution; those not installed are left out."""
    versions = {}
    for name in libraries:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return [round(x, 2) for x in os.getloadavg()]


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def machine_facts(threads: int, libraries: tuple[str, ...]) -> dict[str, Any]:
    """CPU, cores, threads, load averages (at the start; add loadAverageAtEnd), Python, library versions."""
    import torch

    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "loadAverage": load_average(),
        "threads": threads,
        "torchThreads": torch.get_num_threads(),
        "python": platform.python_version(),
        "libraries": library_versions(libraries),
    }
    if cuda_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts

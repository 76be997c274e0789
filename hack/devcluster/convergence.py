"""Does the demo task converge with margin? Trains the SmolLM2 tone example, or the intent one with
`--task intent` (its own spec, unchanged but for the seeds and for local paths in place of S3) on
several seeds, exports each run as the example asks (int4 ONNX), and prints the held-out exact match of
the shipped model in PyTorch (the trainer's final evaluation, on every eval row) and as int4 ONNX (the
exporter's check, on every eval row).

    hack/convergence [--task tone|intent] [--seeds 1 2 3 4 5] [--threshold 0.9]

Exits 1 if any seed scores below the threshold. No cluster is needed: the trainer and the exporter run
in this process, on the files in examples/data/<task>.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devcluster import model, seed, settings

TASKS = ("tone", "intent")


def local_input(seed_value: int, out: Path, task: str = "tone") -> Any:
    """The task's example spec with `seed_value` as training and dataset seed, reading local files."""
    from kubetune_api import FineTuneJob, RunContext, TrainerInput

    example = settings.REPO_ROOT / "examples" / f"finetunejob-smollm2-{task}.yaml"
    body = yaml.safe_load(example.read_text())
    spec = body["spec"]
    spec["baseModel"] = {"uri": str(model.smollm2())}
    spec["dataset"]["trainUri"] = str(seed.DATASETS_DIR / task / "train.jsonl")
    spec["dataset"]["evalUri"] = str(seed.DATASETS_DIR / task / "eval.jsonl")
    spec["dataset"]["seed"] = spec["training"]["seed"] = seed_value
    ftj = FineTuneJob.from_k8s(body)
    run = RunContext(
        name=str(ftj.metadata.name),
        namespace="local",
        run_id=ftj.spec_hash(),
        output_root=str(out / "run"),
        shared_bases_root=str(out / "bases"),
    )
    return TrainerInput(spec=ftj.spec, run=run)


def one_seed(seed_value: int, work: Path, task: str = "tone") -> dict[str, Any]:
    from kubetune_trainer.export import export
    from kubetune_trainer.progress import LoggingSink
    from kubetune_trainer.train import train

    job = local_input(seed_value, work, task)
    started = time.monotonic()
    trained = train(job, work / "train", LoggingSink(min_interval=60))
    target = export(job, work / "export").manifest.targets[0]
    return {
        "seed": seed_value,
        "bestStep": trained.get("bestStep"),
        "rows": trained.get("taskMetricRows"),
        "exactMatch": trained.get("evalExactMatch"),
        "onnxTarget": target.name,
        "onnxExactMatch": target.metrics.get("exactMatch"),
        "seconds": round(time.monotonic() - started),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hack/convergence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, default="tone")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--threshold", type=float, default=0.9)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    results = []
    for seed_value in args.seeds:
        with tempfile.TemporaryDirectory(prefix=f"convergence-{seed_value}-") as tmp:
            result = one_seed(seed_value, Path(tmp), args.task)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\n{'seed':>4} {'best step':>9} {'PyTorch':>8} {'int4 ONNX':>9} {'rows':>5} {'s':>5}")
    for r in results:
        print(
            f"{r['seed']:>4} {r['bestStep']!s:>9} {r['exactMatch']:>8.3f} {r['onnxExactMatch']:>9.3f} "
            f"{r['rows']:>5} {r['seconds']:>5}"
        )
    low = [r for r in results if min(r["exactMatch"], r["onnxExactMatch"]) < args.threshold]
    worst = min(min(r["exactMatch"], r["onnxExactMatch"]) for r in results)
    print(f"\nworst held-out exact match: {worst:.3f} (threshold {args.threshold})")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())

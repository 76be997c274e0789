"""Measures the host memory of a few training steps through the trainer's real path, in a process of
its own: `python memory_probe.py INPUT.json WORKDIR` prints one JSON line.

- baselineBytes: RSS after the imports, before the model is loaded;
- peakBytes: the high-water RSS of the training steps (the kernel's VmHWM, reset through
  /proc/self/clear_refs after the model, data and Trainer are built, so the load's transients don't
  count);
- trainingBytes: peakBytes - baselineBytes, what the plan's estimate is compared with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class _Quiet:
    def progress(self, progress: dict, final: bool = False) -> None:
        pass

    def metrics(self, metrics: dict) -> None:
        pass

    def checkpoint(self, checkpoint: dict) -> None:
        pass


def main(config: Path, workdir: Path) -> dict[str, int]:
    import torch  # noqa: F401  (imported before the baseline: the libraries are not the model)
    import transformers  # noqa: F401

    from kubetune_api import load_trainer_input
    from kubetune_trainer.checkpoints import PreemptionWatch
    from kubetune_trainer.storage import Storage
    from kubetune_trainer.train import build_trainer, load_inputs, run_training

    job = load_trainer_input(config)
    storage = Storage()
    baseline = _status_kib("VmRSS") * 1024
    inputs = load_inputs(job.spec, storage, workdir)
    session = build_trainer(job, inputs, storage, workdir, _Quiet(), PreemptionWatch())  # type: ignore[arg-type]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    run_training(session)
    peak = _status_kib("VmHWM") * 1024
    return {"baselineBytes": baseline, "peakBytes": peak, "trainingBytes": peak - baseline}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))), flush=True)

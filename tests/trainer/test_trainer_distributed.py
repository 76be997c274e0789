"""Data parallelism on one node, as the trainer Job runs it for gpusPerNode > 1: the launcher (torchrun)
starts one process per slot; on the CPU they train over gloo. Every rank ends with the same weights,
only rank 0 uploads and reports, and the launcher exits with the trainer's own codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubetune_trainer.errors import ExitCode


def _launch(tmp_path: Path, name: str, config: dict[str, Any]) -> tuple[subprocess.Popen[str], Path]:
    """Start the launcher with 2 processes, as the trainer pod's command does; `termination` stands
    for the pod's termination log."""
    root = tmp_path / name
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    (root / "termination").touch()
    launcher = [sys.executable, "-m", "kubetune_trainer.launch", "--nproc-per-node=2", "--standalone"]
    train = ["-m", "kubetune_trainer.train", "--config", str(root / "config.json")]
    process = subprocess.Popen(
        [
            *launcher,
            *train,
            "--workdir",
            str(tmp_path / "work"),
            "--progress-file",
            str(root / "progress.jsonl"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "KUBETUNE_PROGRESS_INTERVAL": "0",
            "KUBETUNE_TERMINATION_LOG": str(root / "termination"),
        },
    )
    return process, root


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=600)
    return process.returncode, output


def _config(make_config, base: Path, out: Path, **training: Any) -> dict[str, Any]:
    return make_config(
        str(base),
        str(out),
        training={"maxSteps": 6, "learningRate": 1e-2, "batchSize": 4, "maxSeqLength": 64, **training},
    )


def test_two_processes_train_one_model(tmp_path: Path, tiny_model_dir: Path, make_config) -> None:
    config = _config(make_config, tiny_model_dir, tmp_path / "out", saveSteps=3)
    code, output = _finish(_launch(tmp_path, "run", config)[0])
    assert code == 0, output[-4000:]

    # The pod's message is rank 0's result document.
    rank0 = json.loads((tmp_path / "run" / "termination").read_text())
    # Rank 0 gathered both ranks' weight digests and compared them.
    assert rank0["metrics"]["worldSize"] == 2 and rank0["metrics"]["weightsIdentical"] == 1.0
    assert len(rank0["weightsSha256"]) == 64
    assert rank0["metrics"]["steps"] == 6
    assert {a["kind"] for a in rank0["artifacts"]} == {"adapter"}
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]


def test_a_data_error_keeps_its_exit_code_through_the_launcher(
    tmp_path: Path, tiny_model_dir: Path, make_config
) -> None:
    config = _config(make_config, tiny_model_dir, tmp_path / "out")
    config["spec"]["dataset"]["textTemplate"] = "Phrase: {phrase}\nMood: {mood}"  # no row has `mood`
    code, output = _finish(_launch(tmp_path, "bad", config)[0])
    assert code == ExitCode.DATA, output[-4000:]
    message = (tmp_path / "bad" / "termination").read_text()
    assert message.startswith("DATA:") and "mood" in message


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes."""
    workers = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        ranks = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RANK=")]
        if ppid == parent and ranks:
            workers[int(ranks[0])] = int(proc.name)
    return workers


def _progress_step(root: Path) -> int:
    path = root / "progress.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max((json.loads(line).get("step", 0) for line in lines if line), default=0)


@pytest.mark.parametrize("target", ["rank-1", "launcher"])
def test_sigterm_to_one_rank_or_the_launcher_checkpoints_all_and_exits_preempted(
    tmp_path: Path, tiny_model_dir: Path, make_config, target: str
) -> None:
    config = _config(make_config, tiny_model_dir, tmp_path / "out", maxSteps=400, batchSize=2)
    process, root = _launch(tmp_path, "first", config)
    deadline = time.monotonic() + 300
    while _progress_step(root) < 5:
        assert process.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    pid = _workers(process.pid)[1] if target == "rank-1" else process.pid
    os.kill(pid, signal.SIGTERM)
    code, output = _finish(process)
    assert code == ExitCode.PREEMPTED, output[-4000:]
    # Rank 0 saw the flag too: it saved the checkpoint (only rank 0 writes one) and stopped.
    saved = [json.loads(line) for line in (root / "progress.jsonl").read_text().splitlines() if "uri" in line]
    assert len(saved) == 1 and saved[0]["step"] < 400

    config["spec"]["training"]["maxSteps"] = saved[0]["step"] + 3
    code, output = _finish(_launch(tmp_path, "second", config)[0])
    assert code == 0, output[-4000:]
    result = json.loads((tmp_path / "second" / "termination").read_text())
    assert result["metrics"]["resumedFromStep"] == saved[0]["step"]
    assert result["metrics"]["weightsIdentical"] == 1.0

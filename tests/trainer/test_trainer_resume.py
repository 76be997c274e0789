"""Checkpoints and resume: SIGTERM checkpoints at the end of the current step and exits PREEMPTED (7); the
next start resumes from it and continues the loss curve of an uninterrupted run with the same seed."""

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
from safetensors.torch import load_file

from kubetune_trainer.checkpoints import COMPLETE_MARKER, CheckpointStore
from kubetune_trainer.errors import ExitCode
from kubetune_trainer.storage import Storage

STEPS = 60


def _config(make_config, base: Path, out: Path, **training: Any) -> dict[str, Any]:
    return make_config(
        str(base),
        str(out),
        training={
            "maxSteps": STEPS,
            "learningRate": 5e-3,
            "batchSize": 4,
            "maxSeqLength": 64,
            "saveSteps": 20,
            **training,
        },
    )


def _start(config: dict[str, Any], root: Path) -> subprocess.Popen[bytes]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config))
    progress = root / "progress.jsonl"
    command = [sys.executable, "-m", "kubetune_trainer.train", "--config", str(root / "config.json")]
    return subprocess.Popen(
        [*command, "--workdir", str(root / "work"), "--progress-file", str(progress)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "KUBETUNE_PROGRESS_INTERVAL": "0"},
    )


def _steps_seen(progress: Path) -> int:
    if not progress.exists():
        return 0
    # Only whole lines: the trainer may be in the middle of appending the last one.
    lines = progress.read_text().split("\n")[:-1]
    steps = [json.loads(line).get("step", 0) for line in lines if line]
    return max(steps, default=0)


def _losses(out: Path) -> dict[int, float]:
    log = json.loads((out / "adapter" / "training_log.json").read_text())
    return {e["step"]: e["loss"] for e in log if "loss" in e}


def test_checkpoint_store_ignores_incomplete_uploads(tmp_path: Path) -> None:
    store = CheckpointStore(Storage(), str(tmp_path / "out"))
    for step in (5, 10, 15):
        folder = tmp_path / f"local-{step}"
        folder.mkdir()
        (folder / "weights.bin").write_bytes(bytes([step]))
        store.upload(folder, step, tmp_path / "scratch")
    # A pod killed mid-upload leaves files but no marker: that checkpoint does not exist.
    (tmp_path / "out" / "checkpoints" / "checkpoint-20").mkdir()
    (tmp_path / "out" / "checkpoints" / "checkpoint-20" / "weights.bin").write_bytes(b"partial")
    assert [c.step for c in store.complete()] == [5, 10, 15]
    latest = store.complete()[-1]
    assert latest.step == 15
    local = store.download(latest, tmp_path / "restored")
    assert (local / "weights.bin").read_bytes() == bytes([15]) and (local / COMPLETE_MARKER).exists()
    store.prune(keep_step=5)
    assert [c.step for c in store.complete()] == [5, 10, 15]
    store.prune(keep_step=None)
    assert [c.step for c in store.complete()] == [10, 15]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, make_config) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("resume")
    plain = _start(_config(make_config, tiny_model_dir, root / "plain-out"), root / "plain")
    assert plain.wait(timeout=600) == 0

    config = _config(make_config, tiny_model_dir, root / "resumed-out")
    first = _start(config, root / "first")
    deadline = time.monotonic() + 300
    while _steps_seen(root / "first" / "progress.jsonl") < 25 and time.monotonic() < deadline:
        assert first.poll() is None, "the trainer ended before it was interrupted"
        time.sleep(0.02)
    seen = _steps_seen(root / "first" / "progress.jsonl")
    first.send_signal(signal.SIGTERM)
    first_code = first.wait(timeout=120)
    checkpoints = [
        json.loads(line)
        for line in (root / "first" / "progress.jsonl").read_text().splitlines()
        if '"checkpoint"' in line
    ]
    second = _start(config, root / "second")
    assert second.wait(timeout=600) == 0
    metrics = json.loads((root / "resumed-out" / "adapter" / "training_metrics.json").read_text())
    return {
        "root": root,
        "seen": seen,
        # The last step the first process finished, whenever the signal reached it.
        "last_step": _steps_seen(root / "first" / "progress.jsonl"),
        "first_code": first_code,
        "checkpoints": checkpoints,
        "metrics": metrics,
    }


def test_sigterm_checkpoints_the_current_step_and_exits_preempted(runs: dict[str, Any]) -> None:
    assert runs["first_code"] == ExitCode.PREEMPTED
    last = runs["checkpoints"][-1]
    assert last["kind"] == "checkpoint" and last["uri"].endswith(f"checkpoint-{last['step']}")
    # The step running when SIGTERM came finished and was saved: nothing done is lost, and nothing
    # was trained after it. (Which step that is depends on how fast the signal arrives: at ~20 ms a
    # step, a step or two after the one this test last read.)
    assert runs["seen"] <= last["step"] == runs["last_step"]
    assert runs["checkpoints"][0]["step"] == 20  # the periodic one came first


def test_the_next_start_resumes_from_that_checkpoint(runs: dict[str, Any]) -> None:
    assert runs["metrics"]["resumedFromStep"] == runs["checkpoints"][-1]["step"]
    assert runs["metrics"]["steps"] == STEPS


def test_the_resumed_loss_curve_matches_an_uninterrupted_run(runs: dict[str, Any]) -> None:
    plain = _losses(runs["root"] / "plain-out")
    resumed = _losses(runs["root"] / "resumed-out")
    assert sorted(resumed) == sorted(plain) == list(range(1, STEPS + 1))
    worst = max(abs(plain[s] - resumed[s]) for s in plain)
    print(f"largest loss difference over {STEPS} steps: {worst:.2e}")
    assert worst < 1e-3
    after = [s for s in plain if s > runs["metrics"]["resumedFromStep"]]
    assert after and plain[after[-1]] < plain[1]  # it was learning throughout


def test_a_resumed_run_keeps_and_ends_on_its_best_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, make_config
) -> None:
    """Early stopping's best checkpoint survives a SIGTERM and a resume in a fresh workdir (a new pod):
    it is kept in storage and is what the run saves at the end. The tiny model never answers a tone
    right, so exact match stays 0 and the first evaluation (step 4) stays the best."""
    config = _config(make_config, tiny_model_dir, tmp_path / "out", maxSteps=40, evalSteps=4)
    config["spec"]["evaluation"] = {
        "metrics": ["exactMatch"],
        "samples": 4,
        "maxNewTokens": 2,
        "earlyStopping": {"metric": "exactMatch", "patience": 100},
    }
    first = _start(config, tmp_path / "first")
    deadline = time.monotonic() + 300
    while _steps_seen(tmp_path / "first" / "progress.jsonl") < 14 and time.monotonic() < deadline:
        assert first.poll() is None, "the trainer ended before it was interrupted"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == ExitCode.PREEMPTED

    second = _start(config, tmp_path / "second")
    assert second.wait(timeout=600) == 0
    out = tmp_path / "out"
    metrics = json.loads((out / "adapter" / "training_metrics.json").read_text())
    log = json.loads((out / "adapter" / "training_log.json").read_text())
    scores = {e["step"]: e["eval_exact_match"] for e in log if "eval_exact_match" in e and e["step"] <= 40}
    best = max(scores, key=lambda step: (scores[step], -step))  # the first of the highest
    assert metrics["resumedFromStep"] >= 14 and metrics["bestStep"] == best
    assert (out / "checkpoints" / f"checkpoint-{best}").is_dir()
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    kept = load_file(out / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert all((saved[k] == kept[k]).all() for k in saved)


def test_a_finished_run_is_not_trained_again(runs: dict[str, Any], tiny_model_dir: Path, make_config) -> None:
    """A pod replaced after the run's upload, or the same spec applied again, reports the stored result."""
    root = runs["root"]
    config = _config(make_config, tiny_model_dir, root / "resumed-out")
    again = _start(config, root / "again")
    assert again.wait(timeout=300) == 0
    events = [json.loads(line) for line in (root / "again" / "progress.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["metrics"]  # no training progress at all
    assert events[0]["steps"] == STEPS and events[0]["resumedFromStep"] == runs["metrics"]["resumedFromStep"]


def test_a_full_fine_tune_resumes_its_weights_and_optimizer(
    tmp_path: Path, tiny_model_dir: Path, make_config
) -> None:
    """Method full checkpoints every weight (not an adapter) with its optimizer state; the resumed loss
    curve matches an uninterrupted run's."""

    def config(out: str) -> dict[str, Any]:
        cfg = _config(
            make_config, tiny_model_dir, tmp_path / out, maxSteps=30, saveSteps=100, learningRate=1e-3
        )
        cfg["spec"]["method"] = "full"
        del cfg["spec"]["lora"]
        return cfg

    assert _start(config("plain-out"), tmp_path / "plain").wait(timeout=600) == 0
    first = _start(config("resumed-out"), tmp_path / "first")
    while _steps_seen(tmp_path / "first" / "progress.jsonl") < 10:
        assert first.poll() is None, "the trainer ended before it was interrupted"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == ExitCode.PREEMPTED
    checkpoint = next((tmp_path / "resumed-out" / "checkpoints").iterdir())
    assert (checkpoint / "model.safetensors").exists() and (checkpoint / "optimizer.pt").exists()
    assert _start(config("resumed-out"), tmp_path / "second").wait(timeout=600) == 0

    def losses(out: str) -> dict[int, float]:
        log = json.loads((tmp_path / out / "model" / "training_log.json").read_text())
        return {e["step"]: e["loss"] for e in log if "loss" in e}

    plain, resumed = losses("plain-out"), losses("resumed-out")
    assert sorted(plain) == sorted(resumed) == list(range(1, 31))
    assert max(abs(plain[s] - resumed[s]) for s in plain) < 1e-3

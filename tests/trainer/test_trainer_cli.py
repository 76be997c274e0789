"""Exit codes and termination messages of the entrypoints, on failures that need no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_trainer import export, train
from kubetune_trainer.errors import ExitCode


@pytest.fixture
def termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    path.write_text("")
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(path))
    return path


def run(entry, config: dict | str, tmp_path: Path) -> int:
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return entry.main(["--config", str(path), "--workdir", str(tmp_path / "work")])


def test_invalid_input_exits_2_with_message(tmp_path: Path, termination_log: Path, make_config) -> None:
    config = make_config("/nowhere", str(tmp_path / "out"), method="full")  # with a lora section
    assert run(train, config, tmp_path) == ExitCode.INVALID_CONFIG
    assert "lora must not be set when method is full" in termination_log.read_text()
    assert run(export, "{not json", tmp_path) == ExitCode.INVALID_CONFIG
    assert run(export, config, tmp_path) == ExitCode.INVALID_CONFIG


def test_every_problem_of_an_input_is_named(tmp_path: Path, termination_log: Path, make_config) -> None:
    config = make_config("/nowhere", str(tmp_path / "out"))
    del config["run"]["runId"]
    del config["spec"]["dataset"]
    config["spec"]["training"]["generationEvalSamples"] = 4  # a field of the old trainer config
    assert run(train, config, tmp_path) == ExitCode.INVALID_CONFIG
    message = termination_log.read_text()
    assert message.startswith("INVALID_CONFIG")
    for where in ("run.runId", "spec.dataset", "spec.training.generationEvalSamples"):
        assert where in message, message


def test_an_unreadable_input_file_exits_2(tmp_path: Path, termination_log: Path) -> None:
    missing = tmp_path / "absent.json"
    assert (
        train.main(["--config", str(missing), "--workdir", str(tmp_path / "work")]) == ExitCode.INVALID_CONFIG
    )
    assert str(missing) in termination_log.read_text()


def test_missing_base_model_exits_4(tmp_path: Path, termination_log: Path, make_config) -> None:
    assert (
        run(train, make_config(str(tmp_path / "missing"), str(tmp_path / "out")), tmp_path)
        == ExitCode.STORAGE
    )
    assert "does not exist" in termination_log.read_text()


def test_data_error_exits_3(tmp_path: Path, termination_log: Path, make_config, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"phrase": "ok", "tone": "neutral"}\n{"phrase": "no tone"}\n')
    config = make_config(
        str(tiny_model_dir),
        str(tmp_path / "out"),
        dataset={"trainUri": str(bad), "textTemplate": "Phrase: {phrase}\nTone: {tone}"},
    )
    assert run(train, config, tmp_path) == ExitCode.DATA
    message = termination_log.read_text()
    assert "bad.jsonl: row 2" in message and "'tone'" in message


def test_unwritable_termination_log_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_config
) -> None:
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(tmp_path / "absent" / "log"))
    assert run(train, make_config("/x", "/y", method="full"), tmp_path) == ExitCode.INVALID_CONFIG
    assert not (tmp_path / "absent").exists()

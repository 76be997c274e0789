"""The trainer does what the API documents, reading the API's own models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune_api import FineTuneJob, RunContext, TrainerInput
from kubetune_trainer.cli import load_input
from kubetune_trainer.data import sample_rows, split_rows
from kubetune_trainer.errors import ExitCode, TrainerError
from kubetune_trainer.storage import Storage

REPO = Path(__file__).resolve().parents[2]


def _tiny_spec(**dataset: object) -> TrainerInput:
    import yaml

    body = yaml.safe_load((REPO / "examples" / "finetunejob-tiny.yaml").read_text())
    body["spec"]["dataset"].pop("evalRatio", None)
    body["spec"]["dataset"].pop("maxSamples", None)
    body["spec"]["dataset"].update(dataset)
    spec = FineTuneJob.from_k8s(body).spec
    return TrainerInput(spec=spec, run=RunContext(name="t", namespace="n", run_id="r", output_root="/tmp/o"))


def test_without_eval_uri_or_ratio_every_row_trains() -> None:
    """The CRD says: no evalUri and no evalRatio, nothing held out (the trainer once held out 10%)."""
    rows = [{"phrase": str(i), "tone": "x"} for i in range(100)]
    splits = split_rows(_tiny_spec().spec.dataset, rows, None)
    assert len(splits.train) == 100 and splits.eval == []


def test_eval_ratio_holds_out_exactly_that_share() -> None:
    rows = [{"phrase": str(i), "tone": "x"} for i in range(100)]
    splits = split_rows(_tiny_spec(evalRatio=0.2).spec.dataset, rows, None)
    assert (len(splits.train), len(splits.eval)) == (80, 20)


def test_evaluation_rows_are_a_seeded_sample_not_the_first_rows() -> None:
    rows = [{"i": i} for i in range(40)]
    picked = sample_rows(rows, 10, seed=42)
    assert picked == sample_rows(rows, 10, seed=42) != rows[:10]
    assert [r["i"] for r in picked] == sorted(r["i"] for r in picked)  # file order kept
    assert sample_rows(rows, 64, seed=42) == rows  # fewer rows than asked: all of them


def test_an_input_outside_the_api_fails_with_exit_code_2(tmp_path: Path) -> None:
    document = _tiny_spec().model_dump(mode="json", by_alias=True)
    document["spec"]["dataset"]["evalRatio"] = 0.9  # above the API's bound
    path = tmp_path / "input.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TrainerError) as raised:
        load_input(path)
    assert raised.value.exit_code == ExitCode.INVALID_CONFIG
    assert "spec.dataset.evalRatio" in raised.value.message


def test_an_unreachable_endpoint_names_the_spec_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(TrainerError) as raised:
        Storage().read_if_exists("s3://bucket/key.json", Path("/tmp"))
    assert raised.value.exit_code == ExitCode.STORAGE
    assert "check spec.output.endpoint" in raised.value.message


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "trainer").glob("*.json")), ids=lambda p: p.name)
def test_example_inputs_are_valid(path: Path) -> None:
    """The documents a user can hand to `python -m kubetune_trainer.train --config` outside a cluster."""
    assert load_input(path).run.output_root.startswith("s3://")

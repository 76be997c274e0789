"""`kubetune sweep run`'s flags to a FineTuneSweep, checked by the API's models before anything is sent."""

from __future__ import annotations

import pytest

from kubetune_cli.job_flags import FinetuneFlags, finetunejob
from kubetune_cli.kube import CliError
from kubetune_cli.sweep import check, parse_param, sweep_from_job


def test_values_and_ranges() -> None:
    assert parse_param("lora.r=8,16") == {"path": "lora.r", "values": [8.0, 16.0]}
    assert parse_param("training.learningRate=1e-5..1e-3:log") == {
        "path": "training.learningRate",
        "min": 1e-5,
        "max": 1e-3,
        "scale": "log",
    }
    for bad in ("lora.r", "lora.r=", "lora.r=a,b", "=1,2"):
        with pytest.raises(CliError) as refused:
            parse_param(bad)
        assert refused.value.exit_code == 2


def job() -> dict[str, object]:
    flags = FinetuneFlags(
        model="s3://models/base/",
        data="s3://data/train.jsonl",
        output="s3://runs/x",
        name="tone",
        eval_ratio=0.1,
    )
    return finetunejob(flags)


def test_a_sweep_around_a_finetunejob_manifest() -> None:
    body = sweep_from_job(
        job(), None, ["training.learningRate=1e-4,1e-3"], "evalLoss", "minimize", {"parallelism": 1}
    )
    check(body)
    assert body["metadata"] == {"name": "tone"}
    assert body["spec"]["template"]["spec"] == job()["spec"]
    assert body["spec"]["parameters"] == [{"path": "training.learningRate", "values": [1e-4, 1e-3]}]
    assert body["spec"]["parallelism"] == 1


def test_the_apis_rules_refuse_a_bad_sweep_before_it_is_sent() -> None:
    no_eval = job()
    del no_eval["spec"]["dataset"]["evalRatio"]  # type: ignore[index]
    body = sweep_from_job(no_eval, None, ["lora.r=8,16"], "evalLoss", "minimize", {})
    with pytest.raises(CliError, match="evalUri or evalRatio"):
        check(body)
    ranged = sweep_from_job(job(), None, ["training.learningRate=1e-5..1e-3"], "evalLoss", "minimize", {})
    with pytest.raises(CliError, match=r"a range \(min and max\) needs algorithm random"):
        check(ranged)
    with pytest.raises(CliError, match="must be a FineTuneJob manifest"):
        sweep_from_job({"kind": "Pod"}, None, ["lora.r=8"], "evalLoss", "minimize", {})

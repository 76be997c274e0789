"""The sweep's pure builders: trials from the search space (grid order, seeded random draws, names
within the FineTuneJob limit) and each trial's FineTuneJob, pinned by expected YAML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kubetune_api import FineTuneJob
from kubetune_api.sweep import MAX_TRIALS, FineTuneSweep
from kubetune_operator.builders import sweep as builder
from spec_edits import REPO_ROOT, load

EXPECTED = Path(__file__).parent / "expected" / "sweep"
UPDATE = os.environ.get("KUBETUNE_UPDATE_EXPECTED") == "1"
UID = "5e5e5e5e-0000-4000-8000-000000000001"


def sweep_obj(**spec: Any) -> dict[str, Any]:
    obj = load(REPO_ROOT / "examples" / "finetunesweep-tiny.yaml")
    obj["metadata"].update(namespace="ml-team", uid=UID, generation=1)
    obj["spec"].update(spec)
    return obj


def sweep(**spec: Any) -> FineTuneSweep:
    return FineTuneSweep.from_k8s(sweep_obj(**spec))


def test_trial_job_matches_expected_yaml() -> None:
    s = sweep()
    trial = builder.trials(s)[3]
    actual = yaml.safe_dump(builder.trial_job(s, trial), sort_keys=True, default_flow_style=False, width=110)
    path = EXPECTED / "trial-tiny.yaml"
    if UPDATE:
        path.write_text(actual)
    assert actual == path.read_text(), "KUBETUNE_UPDATE_EXPECTED=1 rewrites the expected file"


def test_expected_folder_holds_only_pinned_objects() -> None:
    assert {p.name for p in EXPECTED.glob("*.yaml")} == {"trial-tiny.yaml"}


def test_trial_job_is_a_valid_finetunejob_owned_by_the_sweep() -> None:
    s = sweep()
    for trial in builder.trials(s):
        body = builder.validated_trial_job(s, trial)
        ftj = FineTuneJob.from_k8s(body)
        assert ftj.spec.training.learning_rate == trial.parameters["training.learningRate"]
        assert ftj.spec.lora is not None and ftj.spec.lora.r == int(trial.parameters["lora.r"])
        assert isinstance(body["spec"]["lora"]["r"], int)
        [owner] = body["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("FineTuneSweep", UID, True)
        assert body["metadata"]["labels"]["team"] == "ml"
        assert body["metadata"]["labels"][builder.SWEEP_LABEL] == "tiny-sweep"


def test_queue_label_passes_through() -> None:
    obj = sweep_obj()
    obj["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "kubetune"
    s = FineTuneSweep.from_k8s(obj)
    body = builder.trial_job(s, builder.trials(s)[0])
    assert FineTuneJob.from_k8s(body).queue_name == "kubetune"


def test_grid_is_the_product_in_order_capped_by_max_trials() -> None:
    trials = builder.trials(sweep())
    assert [t.name for t in trials] == [f"tiny-sweep-{i}" for i in range(4)]
    assert [tuple(t.parameters.values()) for t in trials] == [
        (0.0001, 4.0),
        (0.0001, 8.0),
        (0.001, 4.0),
        (0.001, 8.0),
    ]
    assert [t.index for t in builder.trials(sweep(maxTrials=3))] == [0, 1, 2]


RANDOM = {
    "algorithm": "random",
    "maxTrials": 6,
    "seed": 7,
    "parameters": [
        {"path": "training.learningRate", "min": 0.00001, "max": 0.01, "scale": "log"},
        {"path": "lora.r", "min": 2, "max": 16},
        {"path": "lora.dropout", "values": [0.0, 0.1]},
    ],
}


def test_random_draws_are_seeded_bounded_and_typed() -> None:
    first, again = builder.trials(sweep(**RANDOM)), builder.trials(sweep(**RANDOM))
    assert first == again, "the same seed must give the same trials"
    assert first != builder.trials(sweep(**(RANDOM | {"seed": 8})))
    assert len(first) == 6
    for t in first:
        assert 0.00001 <= t.parameters["training.learningRate"] <= 0.01
        assert t.parameters["lora.r"].is_integer() and 2 <= t.parameters["lora.r"] <= 16
        assert t.parameters["lora.dropout"] in (0.0, 0.1)
    s = sweep(**RANDOM)
    for t in first:
        builder.validated_trial_job(s, t)


def test_log_scale_spreads_over_the_decades() -> None:
    spec = RANDOM | {"maxTrials": 100, "parameters": [RANDOM["parameters"][0]]}
    rates = [t.parameters["training.learningRate"] for t in builder.trials(sweep(**spec))]
    assert sum(r < 0.0001 for r in rates) >= 20, "a log scale draws as often below 1e-4 as in each decade"


def test_a_trial_the_finetunejob_model_refuses_is_reported() -> None:
    s = sweep(parameters=[{"path": "lora.r", "values": [8, 2048]}])
    trial = builder.trials(s)[1]
    with pytest.raises(ValidationError, match="less than or equal to 1024"):
        builder.validated_trial_job(s, trial)


def test_longest_name_and_last_index_fit() -> None:
    obj = sweep_obj(maxTrials=MAX_TRIALS, parameters=[{"path": "lora.alpha", "values": list(range(1, 101))}])
    obj["metadata"]["name"] = "s" * 37
    s = FineTuneSweep.from_k8s(obj)
    last = builder.trials(s)[-1]
    assert last.name == "s" * 37 + "-99"
    FineTuneJob.from_k8s(builder.trial_job(s, last))


def test_stop_patch_suspends_and_marks() -> None:
    assert builder.stop_patch("worse") == {
        "metadata": {"annotations": {builder.EARLY_STOPPED_ANNOTATION: "worse"}},
        "spec": {"suspend": True},
    }

"""The FineTuneSweep models: the example parses, every bad sweep is refused by the Python twins of the
CEL rules with the words the API server uses (tests/api/test_api_cluster.py runs the same table against
the real API server), and the generated CRD has the sweep's names, columns and rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sweep_cases import BAD_SWEEPS, BadSweep, sweep

from kubetune_api import crd
from kubetune_api.sweep import MAX_TRIALS, SWEEP_NAME_MAX_LENGTH, FineTuneSweep, TunablePath
from kubetune_api.v1alpha1 import NAME_MAX_LENGTH, FineTuneJobSpec


def test_example_parses_and_reuses_the_finetunejob_spec() -> None:
    s = FineTuneSweep.from_k8s(sweep())
    assert isinstance(s.spec.template.spec, FineTuneJobSpec)
    assert (s.spec.algorithm, s.spec.parallelism, s.spec.grid_size()) == ("grid", 2, 4)
    assert s.spec.objective.better(1.0, 2.0) and not s.spec.objective.better(2.0, 1.0)


@pytest.mark.parametrize("case", BAD_SWEEPS, ids=lambda c: c.id)
def test_bad_sweep_is_rejected(case: BadSweep) -> None:
    with pytest.raises(ValidationError) as exc:
        FineTuneSweep.from_k8s(case.apply())
    found = {".".join(str(p) for p in e["loc"]): e["msg"] for e in exc.value.errors()}
    assert case.loc in found, f"expected an error at {case.loc!r}, got {found}"
    assert case.message in found[case.loc]


def test_a_grid_above_the_trial_limit_needs_max_trials() -> None:
    obj = sweep()
    obj["spec"]["parameters"] = [
        {"path": "training.learningRate", "values": [0.001 * (i + 1) for i in range(11)]},
        {"path": "lora.r", "values": [float(i + 1) for i in range(10)]},
    ]
    with pytest.raises(ValidationError, match="the grid has 110 combinations"):
        FineTuneSweep.from_k8s(obj)
    obj["spec"]["maxTrials"] = 20
    assert FineTuneSweep.from_k8s(obj).spec.max_trials == 20


def test_trial_names_fit_the_finetunejob_name_limit() -> None:
    assert SWEEP_NAME_MAX_LENGTH + len(f"-{MAX_TRIALS - 1}") == NAME_MAX_LENGTH


def test_every_tunable_path_is_a_spec_field() -> None:
    fields = {
        section: {f.alias for f in model.model_fields.values()}
        for section, model in (
            ("training", FineTuneJobSpec.model_fields["training"].annotation),
            ("lora", FineTuneJobSpec.model_fields["lora"].annotation.__args__[0]),  # type: ignore[union-attr]
        )
    }
    for path in TunablePath:
        section, name = path.value.split(".")
        assert name in fields[section], path


def test_every_sweep_rule_has_a_python_twin() -> None:
    from kubetune_api import sweep as models

    for model in (models.FineTuneSweep, models.FineTuneSweepSpec, models.SearchParameter):
        assert all(rule.check is not None for rule in model.cel_rules), model


def test_sweep_crd_names_columns_and_rules() -> None:
    built = crd.build_crd(crd.FINETUNESWEEP)
    spec = built["spec"]
    assert built["metadata"]["name"] == "finetunesweeps.kubetune.dev"
    assert spec["names"] == {
        "kind": "FineTuneSweep",
        "listKind": "FineTuneSweepList",
        "plural": "finetunesweeps",
        "singular": "finetunesweep",
        "shortNames": ["fts"],
        "categories": ["kubetune"],
    }
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Done": ".status.trialsDone",
        "Total": ".status.trialsTotal",
        "Best": ".status.bestTrial.name",
        "Metric": ".status.bestTrial.metric",
        "Age": ".metadata.creationTimestamp",
    }
    schema = version["schema"]["openAPIV3Schema"]
    template_spec = schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]
    # The template is the FineTuneJob's spec schema, rules included.
    ftj_spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {k: v for k, v in template_spec.items() if k != "description"} == {
        k: v for k, v in ftj_spec.items() if k != "description"
    }
    messages = [r["message"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert "maxTrials is required for algorithm random" in messages
    assert schema["properties"]["spec"]["properties"]["parallelism"]["default"] == 2


def test_every_crd_file_is_generated() -> None:
    assert [str(p) for p in crd.ALL_CRD_PATHS] == [
        "crds/kubetune.dev_finetunejobs.yaml",
        "charts/kubetune/crds/kubetune.dev_finetunejobs.yaml",
        "crds/kubetune.dev_finetunesweeps.yaml",
        "charts/kubetune/crds/kubetune.dev_finetunesweeps.yaml",
    ]

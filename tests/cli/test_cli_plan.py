"""`kubetune plan`: finetune's flags as a dry run on the local cluster; the plan is printed, and a plan
with an error is exit code 1 with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from test_cli_jobs import tiny_flags

pytestmark = pytest.mark.cluster


def plan_flags(seeded: dict[str, str], env: dict[str, str], name: str, *extra: str) -> list[str]:
    return ["plan", *tiny_flags(seeded, env, name, *extra)[1:]]


def test_plan_prints_what_the_dry_run_found(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    kubetune: Any,
) -> None:
    done = kubetune(
        "-n", workspace, *plan_flags(s3_seeded, cluster_env, "cli-plan", "--timeout", "300"), timeout=360
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    for fact in ("Training rows:", "Tokens per row:", "Truncated rows:", "Labels:", "Trainable parameters:"):
        assert fact in out, (fact, out)
    assert "Phrase: " in out and "Tone: " in out, out  # the template rendered on a first row
    assert "Peak memory per device" in out and "lora (spec)" in out, out

    listed = kubetune("-n", workspace, "get", "cli-plan")
    assert listed.stdout.splitlines()[1].split()[:2] == ["cli-plan", "Succeeded"], listed.stdout

    described = kubetune("-n", workspace, "describe", "cli-plan")
    assert "Plan (dry run):" in described.stdout and "Peak memory per device" in described.stdout

    # A dry run's log is its plan pod's; it has no export.
    logged = kubetune("-n", workspace, "logs", "cli-plan")
    assert logged.returncode == 0, logged
    assert logged.stderr.startswith("==> pod cli-plan-plan-") and "(planner, " in logged.stderr, logged.stderr
    assert logged.stdout.strip(), "the plan pod logged nothing"
    no_export = kubetune("-n", workspace, "logs", "cli-plan", "--export")
    assert no_export.returncode == 2 and "is a dry run (spec.dryRun): it exports nothing" in no_export.stderr


def test_a_plan_with_an_error_is_exit_code_1_with_its_reason(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    cluster_env: dict[str, str],
    kubetune: Any,
) -> None:
    flags = plan_flags(s3_seeded, cluster_env, "cli-plan-bad", "--timeout", "300")
    flags[flags.index("--text-template") + 1] = r"Phrase: {phrase}\nMood: {mood}"
    done = kubetune("-n", workspace, *flags, timeout=360)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "MissingField" in done.stdout and "mood" in done.stdout, done.stdout
    assert "error: the plan found errors: MissingField" in done.stderr, done.stderr

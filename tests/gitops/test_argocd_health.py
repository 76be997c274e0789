"""The Argo CD health check (charts/kubetune/files/argocd-health.lua) on FineTuneJobs and
FineTuneSweeps in each phase, run in gopher-lua with the object converted and the libraries limited as
Argo CD does; and the docs' way of installing it for both kinds, which loads that one file."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from gitops_tools import FIXTURES, HEALTH_LUA, REPO, fixture, run, run_harness

from support import helm

DOCS = REPO / "docs" / "gitops.md"
# Argo CD's key for a health check: resource.customizations.health.<group>_<kind>; one script for both.
CM_KEYS = {f"resource.customizations.health.kubetune.dev_{kind}" for kind in ("FineTuneJob", "FineTuneSweep")}

# Fixture -> (Argo CD health, message).
CASES = {
    "no-status.yaml": ("Progressing", "waiting for the operator to report a status"),
    "Pending.yaml": ("Progressing", "waiting for the trainer pods of Job tiny-train"),
    "Queued.yaml": (
        "Progressing",
        "trainer Job tiny-train waiting for Kueue (Pending): queue team-a: couldn't assign flavors to pod "
        "set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, 8 more needed",
    ),
    "Training.yaml": ("Progressing", "trainer Job tiny-train is running (step 2/5)"),
    "Training-stale-generation.yaml": ("Progressing", "waiting for the operator to observe generation 2"),
    "Exporting.yaml": ("Progressing", "export Job tiny-export is running"),
    "Succeeded.yaml": ("Healthy", "training succeeded; export is disabled"),
    # Argo CD itself shows an object being deleted as Progressing ("Pending deletion") before it asks
    # the script; the script alone sees the generation deleting bumped.
    "Succeeded-deleting.yaml": ("Progressing", "waiting for the operator to observe generation 2"),
    "Failed.yaml": ("Degraded", "trainer failed: exit code 3 (dataset error): row 7: missing field 'tone'"),
    "Failed-invalid-spec.yaml": (
        "Degraded",
        "invalid spec: spec.dataset.textTemplate: textTemplate placeholders must name row fields, "
        "e.g. '{text}'",
    ),
    "Suspended.yaml": ("Suspended", "spec.suspend is true: the trainer is stopped"),
    "sweep-no-status.yaml": ("Progressing", "waiting for the operator to report a status"),
    "sweep-Running.yaml": ("Progressing", "1 of 4 trials done; best tiny-sweep-0 (evalLoss 2.31)"),
    "sweep-Succeeded.yaml": ("Healthy", "4 of 4 trials done; best tiny-sweep-1 (evalLoss 2.05)"),
    "sweep-Failed.yaml": ("Degraded", "4 of 4 trials done; none succeeded"),
}


def health(gitops_bin: Path, *args: str, input: str | None = None) -> list[dict[str, str]]:
    return run_harness(gitops_bin / "argolua", "-script", str(HEALTH_LUA), *args, input=input)


def test_every_fixture_has_a_case() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_argocd_health(gitops_bin: Path, name: str) -> None:
    path = fixture(name)
    (got,) = health(gitops_bin, str(path))
    status, message = CASES[name]
    object_name = yaml.safe_load(path.read_text())["metadata"]["name"]
    assert got == {"name": object_name, "status": status, "message": message}


def test_degraded_without_a_status_message_shows_the_stalled_condition(gitops_bin: Path) -> None:
    obj = yaml.safe_load(fixture("Failed.yaml").read_text())
    del obj["status"]["message"]
    for c in obj["status"]["conditions"]:
        if c["type"] == "Stalled":
            c["message"] = "the Stalled condition's words"
    (got,) = health(gitops_bin, input=yaml.safe_dump(obj))
    assert (got["status"], got["message"]) == ("Degraded", "the Stalled condition's words")


def test_the_harness_reports_an_invalid_status_as_argo_cd_does(gitops_bin: Path, tmp_path: Path) -> None:
    # Proves the harness checks the returned status, so the cases above test the script, not a lenient
    # harness.
    script = tmp_path / "bad.lua"
    script.write_text('return { status = "Fine", message = "x" }\n')
    (got,) = run_harness(gitops_bin / "argolua", "-script", str(script), str(fixture("Succeeded.yaml")))
    assert (got["status"], got["message"]) == ("Unknown", "Lua returned an invalid health status")


def test_the_harness_has_no_string_library(gitops_bin: Path, tmp_path: Path) -> None:
    # Argo CD runs a custom health check without Lua's string library; a script that used it would
    # pass here and fail there, were the harness more generous.
    script = tmp_path / "uses_string.lua"
    script.write_text('return { status = "Healthy", message = string.upper("x") }\n')
    result = run(gitops_bin / "argolua", "-script", str(script), str(fixture("Succeeded.yaml")))
    assert result.returncode != 0 and "string" in result.stderr, result


def test_the_docs_install_the_script_from_its_one_file(tmp_path: Path) -> None:
    """The docs' `helm --set-file` arguments, given to helm against a chart that only echoes its values,
    put the file's exact bytes under the argo-cd chart's configs.cm key that Argo CD reads."""
    text = DOCS.read_text()
    code = [line.strip() for line in HEALTH_LUA.read_text().splitlines()]
    copied = [line for line in code if len(line) > 20 and not line.startswith("--") and line in text]
    assert not copied, "the docs must point to the script, not carry a copy of it"
    # The one helm command of the docs, its continued lines joined: a --set-file for each kind.
    (command,) = re.findall(r"^helm upgrade .*$", text.replace("\\\n", " "), re.MULTILINE)
    args = shlex.split(command)
    set_files = [args[i + 1].partition("=") for i, arg in enumerate(args) if arg == "--set-file"]
    assert len(set_files) == len(CM_KEYS)
    assert {(REPO / path).resolve() for _, _, path in set_files} == {HEALTH_LUA}

    chart = tmp_path / "echo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: echo\nversion: 0.1.0\n")
    (chart / "templates" / "values.yaml").write_text("{{ toYaml .Values }}\n")
    given = [a for key, _, _ in set_files for a in ("--set-file", f"{key}={HEALTH_LUA}")]
    rendered = helm("template", "x", str(chart), *given).stdout
    (values,) = [d for d in yaml.safe_load_all(rendered) if d]
    assert {k: v for k, v in values["configs"]["cm"].items()} == dict.fromkeys(
        CM_KEYS, HEALTH_LUA.read_text()
    )

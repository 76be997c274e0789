"""The CRD against the real API server of the local cluster (`hack/cluster up`).

The CEL rules, schema bounds and defaults are enforced by the API server, not by us: these tests apply
the generated CRD and check that bad specs are rejected with the same readable messages pydantic gives,
and that the server's defaults are the models' defaults.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from api_cases import BAD_SPECS, EXAMPLES, REPO_ROOT, BadSpec, load, tiny
from kubernetes import client
from sweep_cases import BAD_SWEEPS, BadSweep

import support
from devcluster import release
from kubetune_api import ExportTarget, FineTuneJob, FineTuneJobSpec, FineTuneJobStatus, crd
from support import wait_for

pytestmark = pytest.mark.cluster

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(cluster_env: dict[str, str]) -> Kubectl:
    # The kit's kubectl matches the server's version; a system one may be older.
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return support.kubectl(*args, cluster_env=cluster_env, input=stdin, check=False, timeout=60)

    return run


@pytest.fixture(scope="module")
def crd_applied(kubectl: Kubectl) -> None:
    # Server-side apply is idempotent and leaves the CRDs for other suites; they are never deleted here.
    for kind in crd.KINDS:
        path = REPO_ROOT / kind.paths[0]
        r = kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kubetune-api-tests",
            "-f",
            str(path),
        )
        assert r.returncode == 0, f"the API server refused the generated CRD {path.name}:\n{r.stderr}"
        r = kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{kind.crd_name}")
        assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def no_operator(core: client.CoreV1Api) -> None:
    """These tests read back exactly what they wrote; a running operator would reconcile it."""
    release.uninstall()
    wait_for(
        lambda: (
            not core.list_namespaced_pod(
                release.NAMESPACE, label_selector="app.kubernetes.io/name=kubetune"
            ).items
        ),
        120,
        "the operator pod to go away",
    )


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, crd_applied: None, no_operator: None) -> Iterator[str]:
    name = f"t-api-{uuid.uuid4().hex[:8]}"
    assert kubectl("create", "namespace", name).returncode == 0
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def _dry_run(kubectl: Kubectl, ns: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # kubectl validates fields strictly by default, so unknown fields (inline credentials) are errors.
    return kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=yaml.safe_dump(obj))


def _create(kubectl: Kubectl, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
    r = kubectl("create", "-n", ns, "-o", "json", "-f", "-", stdin=yaml.safe_dump(obj))
    assert r.returncode == 0, r.stderr
    created: dict[str, Any] = json.loads(r.stdout)
    return created


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_server_accepts_example(kubectl: Kubectl, ns: str, path: Any) -> None:
    r = _dry_run(kubectl, ns, load(path))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", BAD_SPECS, ids=lambda c: c.id)
def test_server_rejects_bad_spec(kubectl: Kubectl, ns: str, case: BadSpec) -> None:
    r = _dry_run(kubectl, ns, case.apply())
    assert r.returncode != 0, f"the API server accepted {case.id}"
    assert case.server in r.stderr, r.stderr


@pytest.mark.parametrize("case", BAD_SWEEPS, ids=lambda c: c.id)
def test_server_rejects_bad_sweep(kubectl: Kubectl, ns: str, case: BadSweep) -> None:
    """The sweep's CEL rules and their Python twins (tests/api/test_api_sweep.py), one table."""
    r = _dry_run(kubectl, ns, case.apply())
    assert r.returncode != 0, f"the API server accepted {case.id}"
    assert (case.server or case.message) in r.stderr, r.stderr


def test_server_defaults_are_the_models_defaults(kubectl: Kubectl, ns: str) -> None:
    local = tiny()
    local["metadata"]["name"] = "defaults"
    del local["spec"]["export"]
    stored = _create(kubectl, ns, local)
    # The server filled in nested defaults (export: {} -> targets: [{}] -> int4 cpu with its int4 settings),
    # pydantic fills in the same ones: both parse to the same spec, hence the same run id.
    [target] = stored["spec"]["export"]["targets"]
    assert (target["precision"], target["executionProvider"]) == ("int4", "cpu")
    assert target["int4"] == ExportTarget().int4.to_k8s()
    assert stored["spec"]["backoffLimit"] == 2
    assert FineTuneJobSpec.model_validate(stored["spec"]) == FineTuneJobSpec.model_validate(local["spec"])
    assert FineTuneJob.from_k8s(stored).spec_hash() == FineTuneJob.from_k8s(local).spec_hash()


def test_method_and_model_are_immutable(kubectl: Kubectl, ns: str) -> None:
    obj = tiny()
    obj["metadata"]["name"] = "immutable"
    _create(kubectl, ns, obj)

    def patch(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"spec": spec})
        return kubectl("patch", "-n", ns, "ftj", "immutable", "--type=merge", "--dry-run=server", "-p", body)

    r = patch({"method": "qlora"})
    assert r.returncode != 0 and "method is immutable" in r.stderr, r.stderr
    r = patch({"baseModel": {"uri": "s3://kubetune-dev/models/other/"}})
    assert r.returncode != 0 and "baseModel.uri is immutable" in r.stderr, r.stderr
    r = patch({"suspend": True, "training": {"maxSteps": 10}})
    assert r.returncode == 0, r.stderr


FULL_STATUS = {
    "phase": "Training",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Training",
            "message": "step 3 of 5",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 1,
        },
        {"type": "Reconciling", "status": "True", "reason": "Training"},
    ],
    "startTime": "2026-01-02T03:00:00Z",
    "runId": "0123456789ab",
    "trainerJobName": "status-train-0123456789ab",
    "progress": {
        "step": 3,
        "totalSteps": 5,
        "progressPercentage": 60,
        "estimatedRemainingSeconds": 12,
        "epoch": 0.5,
        "loss": 2.25,
        "evalLoss": 2.5,
        "learningRate": 0.0002,
        "tokensPerSecond": 1234.5,
        "metrics": {"evalLoss": 2.5, "exactMatch": 0.75},
        "updateTime": "2026-01-02T03:04:05Z",
    },
    "lastCheckpoint": {
        "step": 3,
        "uri": "s3://kubetune-dev/runs/tiny/ckpt/3/",
        "time": "2026-01-02T03:04:00Z",
    },
    "artifacts": [
        {"kind": "adapter", "uri": "s3://kubetune-dev/runs/tiny/a/", "sizeBytes": 1024, "sha256": "0" * 64},
        {"kind": "onnxBase", "uri": "s3://kubetune-dev/bases/k/", "target": "int4-cpu"},
    ],
    "exportTargets": [{"name": "int4-cpu", "gate": "Passed", "metrics": {"exactMatch": 0.95, "parity": 1.0}}],
    "metrics": {"eval_loss": 2.5},
    "message": "training",
}


def test_status_subresource_keeps_every_field(kubectl: Kubectl, ns: str) -> None:
    obj = tiny()
    obj["metadata"]["name"] = "status"
    _create(kubectl, ns, obj)
    body = json.dumps({"status": FULL_STATUS})
    r = kubectl("patch", "-n", ns, "ftj", "status", "--subresource=status", "--type=merge", "-p", body)
    assert r.returncode == 0, r.stderr
    stored = json.loads(kubectl("get", "-n", ns, "ftj", "status", "-o", "json").stdout)
    assert stored["status"] == FULL_STATUS, "the status schema pruned or changed a field"
    assert FineTuneJobStatus.model_validate(stored["status"]).to_k8s() == FULL_STATUS

    r = kubectl("get", "-n", ns, "ftj", "status")
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "METHOD", "MODEL", "PROGRESS%", "LOSS", "AGE"]
    assert row.split()[:6] == ["status", "Training", "lora", obj["spec"]["baseModel"]["uri"], "60", "2.25"]


def test_kubectl_explain_shows_the_descriptions(kubectl: Kubectl, crd_applied: None) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is established.
    def explain() -> str | None:
        r = kubectl("explain", "ftj.spec.training")
        return r.stdout if r.returncode == 0 and "maxSteps" in r.stdout else None

    text = wait_for(explain, 30, "kubectl explain ftj.spec.training")
    assert "Number of optimizer steps" in text


def test_explicit_null_means_unset(kubectl: Kubectl, ns: str) -> None:
    """The CRD has no `nullable`: the server prunes a null, so CEL `has()` agrees with Python's None."""
    obj = tiny()
    obj["metadata"]["name"] = "nulls"
    obj["spec"]["dataset"]["evalUri"] = None  # beside evalRatio: fine, because null is unset
    obj["spec"]["training"]["epochs"] = None
    FineTuneJob.from_k8s(obj)
    stored = _create(kubectl, ns, obj)
    assert "evalUri" not in stored["spec"]["dataset"] and "epochs" not in stored["spec"]["training"]

"""The chart's ValidatingAdmissionPolicy on the local cluster's API server.

Only the policy and its binding are applied (rendered from the chart), never the operator. The
binding selects this module's chart-<random> namespaces by name and nothing else, so FineTuneJobs of
other suites on the same cluster are never checked; binding and policy are deleted at the end.
FineTuneJobs are created with a server-side dry run (admission runs, nothing is stored), except in
the update test, which needs a stored object and deletes it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from chart_tools import documents, kubectl, template
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "kubetune.dev", "v1alpha1", "finetunejobs"
DEFAULT_PREFIXES = ["registry.example/ml/", "ghcr.io/kubetune/kubetune-trainer:"]
# The chart's defaults for this module: small, so every limit is easy to cross.
POLICY_VALUES = {
    "admissionPolicy.enabled": "true",
    "admissionPolicy.defaults.maxGpusPerJob": "4",
    "admissionPolicy.defaults.maxNodes": "2",
    "admissionPolicy.defaults.allowedImagePrefixes": "{" + ",".join(DEFAULT_PREFIXES) + "}",
}
# The API server learns of a new policy, binding or namespace annotation from its informers.
PROPAGATION_SECONDS = 60


@dataclass(frozen=True)
class Namespaces:
    limited: str  # bound, chart defaults
    free: str  # not bound
    annotated: str  # bound, its own limits
    malformed: str  # bound, an annotation that is not a number
    updated: str  # bound, for the update test
    policy: str  # the policy's and the binding's name


ANNOTATED = {
    "kubetune.dev/max-gpus-per-job": "16",
    "kubetune.dev/max-nodes": "8",
    "kubetune.dev/allowed-image-prefixes": "team.example/a/, team.example/b/,",
}


def finetunejob(name: str, **resources: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "s3://models/tiny/"},
            "dataset": {"trainUri": "s3://data/train.jsonl", "textTemplate": "{text}"},
            "lora": {},
            "resources": resources,
            "output": {"uri": "s3://runs/limits"},
            # Stored only in the update test: suspended, so no trainer pod ever starts.
            "suspend": True,
        },
    }


def refusal(
    api: client.CustomObjectsApi, namespace: str, body: dict[str, Any], dry_run: bool = True
) -> tuple[int, str] | None:
    """None when the API server accepts the FineTuneJob, else (HTTP status, message)."""
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, **({"dry_run": "All"} if dry_run else {})
        )
    except ApiException as e:
        return e.status, json.loads(e.body)["message"]
    return None


def by_policy(refused: tuple[int, str] | None, policy: str) -> bool:
    """Whether the refusal is the policy's, not the CRD's own validation."""
    return refused is not None and f"ValidatingAdmissionPolicy '{policy}'" in refused[1]


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while not check():
        assert time.monotonic() < deadline, f"not within {PROPAGATION_SECONDS}s: {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def bound(
    cluster_env: dict[str, str], core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> Iterator[Namespaces]:
    base = f"chart-{uuid.uuid4().hex[:8]}"
    ns = Namespaces(
        limited=f"{base}-a",
        free=f"{base}-b",
        annotated=f"{base}-c",
        malformed=f"{base}-d",
        updated=f"{base}-e",
        policy=f"kt-kubetune-{base}-limits",
    )
    selected = [ns.limited, ns.annotated, ns.malformed, ns.updated]
    manifests = template(
        "--show-only",
        "templates/admission-policy.yaml",
        namespace=base,
        values=POLICY_VALUES | {"watchNamespaces": "{" + ",".join(selected) + "}"},
    )
    docs = {d["kind"]: d for d in documents(manifests)}
    assert sorted(docs) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    # Applied to this module's namespaces only, whatever else runs on the cluster.
    assert docs["ValidatingAdmissionPolicyBinding"]["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": selected}]
    }

    annotations = {
        ns.annotated: ANNOTATED,
        ns.malformed: {"kubetune.dev/max-nodes": "lots", "kubetune.dev/max-gpus-per-job": "2"},
        ns.updated: {"kubetune.dev/max-gpus-per-job": "2"},
    }
    names = [ns.limited, ns.free, ns.annotated, ns.malformed, ns.updated]
    for name in names:
        meta = client.V1ObjectMeta(name=name, annotations=annotations.get(name))
        core.create_namespace(client.V1Namespace(metadata=meta))
    try:
        kubectl("apply", "-f", "-", input=manifests, cluster_env=cluster_env)
        eventually(
            lambda: by_policy(refusal(custom, ns.limited, finetunejob("probe", gpusPerNode=5)), ns.policy),
            "the policy is enforced",
        )
        yield ns
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            kubectl("delete", kind, ns.policy, "--ignore-not-found", cluster_env=cluster_env)
        kubectl("delete", "namespace", *names, "--wait=false", "--ignore-not-found", cluster_env=cluster_env)


def test_policy_is_served_and_type_checks(cluster_env: dict[str, str], bound: Namespaces) -> None:
    resources = kubectl("api-resources", "--api-group=admissionregistration.k8s.io", cluster_env=cluster_env)
    assert "validatingadmissionpolicies" in resources.stdout
    assert "validatingadmissionpolicybindings" in resources.stdout

    def checked() -> dict[str, Any] | None:
        out = kubectl("get", "validatingadmissionpolicy", bound.policy, "-o", "json", cluster_env=cluster_env)
        policy = json.loads(out.stdout)
        status = policy.get("status", {})
        return status if status.get("observedGeneration") == policy["metadata"]["generation"] else None

    eventually(lambda: checked() is not None, "the policy is type-checked")
    # Every expression compiles against the FineTuneJob CRD's schema: no warnings.
    assert not (checked() or {}).get("typeChecking", {}).get("expressionWarnings")


@pytest.mark.parametrize(
    "resources",
    [
        {},  # the CRD's defaults: one node, one GPU
        {"gpusPerNode": 2, "nodes": 2},
        {"gpusPerNode": 4},
        {"gpusPerNode": 0, "nodes": 2},
        {"image": "registry.example/ml/trainer:1.0"},
        {"image": "ghcr.io/kubetune/kubetune-trainer:0.1.0"},
    ],
)
def test_within_the_defaults(
    custom: client.CustomObjectsApi, bound: Namespaces, resources: dict[str, Any]
) -> None:
    assert refusal(custom, bound.limited, finetunejob("ok", **resources)) is None


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        (
            {"gpusPerNode": 3, "nodes": 2},
            "this FineTuneJob asks for 6 GPUs (spec.resources.gpusPerNode 3 x spec.resources.nodes 2); "
            "namespace {ns} allows at most 4 GPUs per FineTuneJob (the default)",
        ),
        (
            {"gpusPerNode": 5},
            "this FineTuneJob asks for 5 GPUs (spec.resources.gpusPerNode 5 x spec.resources.nodes 1); "
            "namespace {ns} allows at most 4 GPUs per FineTuneJob (the default)",
        ),
        (
            {"gpusPerNode": 0, "nodes": 3},
            "spec.resources.nodes is 3; namespace {ns} allows at most 2 nodes per FineTuneJob (the default)",
        ),
        (
            {"image": "evil.example/miner:1"},
            "spec.resources.image evil.example/miner:1 is not allowed in namespace {ns}: it must start "
            "with one of registry.example/ml/, ghcr.io/kubetune/kubetune-trainer: (the default)",
        ),
        # A prefix ending in ":" or "/" cannot be stretched into another repository's name.
        (
            {"image": "ghcr.io/kubetune/kubetune-trainer-evil:1"},
            "spec.resources.image ghcr.io/kubetune/kubetune-trainer-evil:1 is not allowed",
        ),
    ],
)
def test_over_the_defaults_is_refused(
    custom: client.CustomObjectsApi, bound: Namespaces, resources: dict[str, Any], message: str
) -> None:
    refused = refusal(custom, bound.limited, finetunejob("over", **resources))
    assert refused is not None, "accepted"
    status, text = refused
    assert status == 403, text
    assert f"ValidatingAdmissionPolicy '{bound.policy}'" in text, text
    assert message.format(ns=bound.limited) in text, text


def test_every_limit_crossed_is_named(custom: client.CustomObjectsApi, bound: Namespaces) -> None:
    body = finetunejob("over", gpusPerNode=4, nodes=3, image="evil.example/miner:1")
    refused = refusal(custom, bound.limited, body)
    assert refused is not None, "accepted"
    status, text = refused
    assert status == 403, text
    for part in ("asks for 12 GPUs", "spec.resources.nodes is 3", "evil.example/miner:1 is not allowed"):
        assert part in text, text


def test_unbound_namespaces_are_untouched(custom: client.CustomObjectsApi, bound: Namespaces) -> None:
    body = finetunejob("big", gpusPerNode=16, nodes=4, image="evil.example/miner:1")
    assert refusal(custom, bound.free, body) is None


def test_namespace_annotations_override_the_defaults(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, bound: Namespaces
) -> None:
    ns = bound.annotated
    # Above every default, within the namespace's own limits.
    for resources in (
        {"gpusPerNode": 16},
        {"gpusPerNode": 2, "nodes": 8},
        {"image": "team.example/b/trainer:2"},
    ):
        assert refusal(custom, ns, finetunejob("ok", **resources)) is None, resources

    cases = [
        (
            {"gpusPerNode": 4, "nodes": 8},
            f"asks for 32 GPUs (spec.resources.gpusPerNode 4 x spec.resources.nodes 8); namespace {ns} "
            "allows at most 16 GPUs per FineTuneJob (namespace annotation kubetune.dev/max-gpus-per-job)",
        ),
        (
            {"gpusPerNode": 1, "nodes": 9},
            f"spec.resources.nodes is 9; namespace {ns} allows at most 8 nodes per FineTuneJob "
            "(namespace annotation kubetune.dev/max-nodes)",
        ),
        # The namespace's prefixes replace the defaults.
        (
            {"image": "registry.example/ml/trainer:1.0"},
            f"spec.resources.image registry.example/ml/trainer:1.0 is not allowed in namespace {ns}: it "
            "must start with one of team.example/a/, team.example/b/ "
            "(namespace annotation kubetune.dev/allowed-image-prefixes)",
        ),
    ]
    for resources, message in cases:
        refused = refusal(custom, ns, finetunejob("over", **resources))
        assert refused is not None and refused[0] == 403, (resources, refused)
        assert message in refused[1], refused[1]

    # An empty list allows no override at all; the trainer image of the operator is still used.
    core.patch_namespace(ns, {"metadata": {"annotations": {"kubetune.dev/allowed-image-prefixes": ""}}})
    eventually(
        lambda: by_policy(
            refusal(custom, ns, finetunejob("ok", image="team.example/b/trainer:2")), bound.policy
        ),
        "the new annotation is seen",
    )
    refused = refusal(custom, ns, finetunejob("img", image="team.example/b/trainer:2"))
    assert refused is not None
    assert (
        "no image override is allowed here; leave it unset to use the operator's trainer image" in refused[1]
    )
    assert refusal(custom, ns, finetunejob("ok")) is None


def test_a_malformed_annotation_is_refused_not_ignored(
    custom: client.CustomObjectsApi, bound: Namespaces
) -> None:
    refused = refusal(custom, bound.malformed, finetunejob("any", gpusPerNode=0))
    assert refused is not None, "accepted"
    status, text = refused
    assert status == 422, text
    assert f"namespace {bound.malformed}: annotation kubetune.dev/max-nodes must be a whole number" in text


def test_updates_are_checked_only_when_resources_change(
    cluster_env: dict[str, str], custom: client.CustomObjectsApi, core: client.CoreV1Api, bound: Namespaces
) -> None:
    ns, name = bound.updated, "grandfathered"
    assert refusal(custom, ns, finetunejob(name, gpusPerNode=2), dry_run=False) is None
    try:
        # The namespace's limit drops below what the stored FineTuneJob asks for.
        core.patch_namespace(ns, {"metadata": {"annotations": {"kubetune.dev/max-gpus-per-job": "1"}}})
        eventually(
            lambda: by_policy(refusal(custom, ns, finetunejob("probe", gpusPerNode=2)), bound.policy),
            "the lowered limit is seen",
        )

        def patch(body: dict[str, Any]) -> tuple[int, str] | None:
            try:
                custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)
            except ApiException as e:
                return e.status, json.loads(e.body)["message"]
            return None

        # What the operator does to every FineTuneJob (finalizers, annotations) still works, and so
        # does a user's change elsewhere in the spec.
        assert patch({"metadata": {"annotations": {"example.com/note": "kept"}}}) is None
        assert patch({"spec": {"ttlSecondsAfterFinished": 60}}) is None
        # A change to the resources is checked against the new limit.
        refused = patch({"spec": {"resources": {"cpu": "1"}}})
        assert refused is not None and refused[0] == 403, refused
        assert "allows at most 1 GPUs per FineTuneJob (namespace annotation" in refused[1]
        assert patch({"spec": {"resources": {"gpusPerNode": 1}}}) is None
    finally:
        # Without a running operator its finalizer (if one was added) would keep the object forever.
        kubectl("-n", ns, "delete", "finetunejob", name, "--wait=false", cluster_env=cluster_env)
        gone = kubectl(
            "-n",
            ns,
            "wait",
            "--for=delete",
            f"finetunejob/{name}",
            "--timeout=60s",
            check=False,
            cluster_env=cluster_env,
        )
        if gone.returncode != 0:
            kubectl(
                "-n",
                ns,
                "patch",
                "finetunejob",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
                cluster_env=cluster_env,
            )

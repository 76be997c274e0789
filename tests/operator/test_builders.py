"""The pure builders: FineTuneJob in, Kubernetes objects out. Names, owners, labels, RBAC and the
pods' environment here; the Jobs' shape in test_jobs.py, the trainer's input in test_trainer_input.py.

Expected-YAML files pin the whole objects built from the tiny example; table tests pin each decision
the builders make. `KUBETUNE_UPDATE_EXPECTED=1 pytest tests/operator` rewrites the expected files.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from builder_cases import (
    BUILDERS,
    CREDENTIAL_VARS,
    JOB_BUILDERS,
    SETTINGS,
    build,
    container,
    env,
    pod_spec,
    queued_multi_node,
)
from operator_cases import NAMESPACE, UID, Edit, delete, serialize, set_, tiny

from kubetune_operator.builders import jobs, names, rbac
from kubetune_operator.observation import child_job, container_outcome
from kubetune_operator.settings import OperatorSettings

EXPECTED = Path(__file__).parent / "expected"
UPDATE = os.environ.get("KUBETUNE_UPDATE_EXPECTED") == "1"


# --- expected YAML ------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # The ConfigMap's config.json reads best as a literal block.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=110)


@pytest.mark.parametrize("kind", BUILDERS)
def test_matches_expected_yaml(kind: str) -> None:
    actual = serialize(BUILDERS[kind](tiny()))
    path = EXPECTED / f"{kind}-tiny.yaml"
    if UPDATE:
        path.write_text(dump(actual))
        return
    assert path.exists(), f"{path} is missing: run with KUBETUNE_UPDATE_EXPECTED=1 and review the diff"
    expected = yaml.safe_load(path.read_text())
    if actual != expected:
        diff = difflib.unified_diff(
            dump(expected).splitlines(), dump(actual).splitlines(), "expected", "actual", lineterm=""
        )
        pytest.fail(
            f"{path.name} differs (KUBETUNE_UPDATE_EXPECTED=1 rewrites it):\n" + "\n".join(diff),
            pytrace=False,
        )


def test_expected_folder_holds_only_pinned_objects() -> None:
    assert {p.name for p in EXPECTED.glob("*.yaml")} == {f"{kind}-tiny.yaml" for kind in BUILDERS}


# --- names, owner references, labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("trainer-job", "tiny-train"),
        ("export-job", "tiny-export"),
        ("configmap", "tiny-config"),
        ("serviceaccount", "tiny-trainer"),
        ("role", "tiny-trainer"),
        ("rolebinding", "tiny-trainer"),
    ],
)
def test_children_have_fixed_names_in_the_finetunejob_namespace(kind: str, name: str) -> None:
    meta = serialize(BUILDERS[kind](tiny()))["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, NAMESPACE)
    renamed = serialize(BUILDERS[kind](tiny(set_("metadata.name", "other"))))["metadata"]
    assert renamed["name"] == name.replace("tiny", "other", 1)


@pytest.mark.parametrize("kind", BUILDERS)
def test_children_are_owned_by_the_finetunejob(kind: str) -> None:
    meta = serialize(BUILDERS[kind](tiny()))["metadata"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "name": "tiny",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize("kind", BUILDERS)
def test_children_carry_the_finetunejob_and_run_id_labels(kind: str) -> None:
    ftj = tiny()
    labels = serialize(BUILDERS[kind](ftj))["metadata"]["labels"]
    assert labels[names.FINETUNEJOB_LABEL] == "tiny"
    # The JobSet case edits the run-defining resources first.
    run_of = queued_multi_node(ftj) if kind == "trainer-jobset" else ftj
    assert labels[names.RUN_ID_LABEL] == run_of.spec_hash()
    assert labels[names.MANAGED_BY_LABEL] == names.MANAGED_BY
    assert labels["app.kubernetes.io/name"] == "kubetune"


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_job_and_pod_labels_name_the_component_the_observer_looks_for(kind: str) -> None:
    ftj = tiny()
    job = build(kind)
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["labels"][names.COMPONENT_LABEL] == kind
    assert pod_labels == job["metadata"]["labels"]
    # The observer reads the run id from the Job, and the outcome from the container the label names.
    assert child_job(job, []).run_id == ftj.spec_hash()
    pod = {
        "metadata": {"name": f"{job['metadata']['name']}-abcde", "labels": pod_labels},
        "status": {
            "containerStatuses": [{"name": container(job)["name"], "state": {"terminated": {"exitCode": 0}}}]
        },
    }
    assert container_outcome(pod) is not None


@pytest.mark.parametrize(
    ("edit", "new_run"),
    [
        (set_("spec.suspend", True), False),
        (set_("spec.backoffLimit", 5), False),
        (set_("spec.activeDeadlineSeconds", 60), False),
        (set_("spec.ttlSecondsAfterFinished", 1), False),
        (set_("spec.lora.r", 4), True),
        (set_("spec.training.maxSteps", 6), True),
    ],
    ids=["suspend", "backoffLimit", "activeDeadlineSeconds", "ttl", "lora.r", "maxSteps"],
)
def test_run_id_label_moves_only_with_the_run_defining_spec(edit: Edit, new_run: bool) -> None:
    before = build("trainer")["metadata"]["labels"][names.RUN_ID_LABEL]
    after = build("trainer", edit)["metadata"]["labels"][names.RUN_ID_LABEL]
    assert (after != before) is new_run


def test_children_reference_each_other_by_the_fixed_names() -> None:
    ftj = tiny()
    trainer = serialize(jobs.trainer_job(ftj, SETTINGS))
    cm = serialize(jobs.config_map(ftj))
    binding = serialize(rbac.role_binding(ftj))
    assert pod_spec(trainer)["serviceAccountName"] == "tiny-trainer"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tiny-trainer",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tiny-trainer", "namespace": NAMESPACE}]
    volumes = {v["name"]: v for v in pod_spec(trainer)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    mount = next(m for m in container(trainer)["volumeMounts"] if m["name"] == "config")
    command = container(trainer)["command"]
    config_path = command[command.index("--config") + 1]
    assert config_path == f"{mount['mountPath']}/{next(iter(cm['data']))}"


# --- RBAC ---------------------------------------------------------------------------------------------


def test_role_grants_only_get_and_patch_of_its_own_status() -> None:
    role = serialize(rbac.role(tiny()))
    assert role["rules"] == [
        {
            "apiGroups": ["kubetune.dev"],
            "resources": ["finetunejobs/status"],
            "resourceNames": ["tiny"],
            "verbs": ["get", "patch"],
        }
    ]


# --- credentials and environment ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_credentials_come_from_the_secret_with_custom_keys(kind: str) -> None:
    ref = {"name": "team-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}
    variables = env(build(kind, set_("spec.output.credentialsSecretRef", ref)))
    assert variables["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "id"}},
    }
    assert variables["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "secret"}},
    }


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_without_a_secret_the_pod_uses_ambient_credentials(kind: str) -> None:
    variables = env(build(kind, delete("spec.output.credentialsSecretRef")))
    assert not CREDENTIAL_VARS & variables.keys()


@pytest.mark.parametrize("kind", [*BUILDERS])
def test_no_literal_credentials_anywhere(kind: str) -> None:
    ref = {"name": "team-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}
    obj = serialize(BUILDERS[kind](tiny(set_("spec.output.credentialsSecretRef", ref))))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") in CREDENTIAL_VARS:
                assert "value" not in node, node
                assert set(node["valueFrom"]) == {"secretKeyRef"}, node
            for key, value in node.items():
                assert key not in ("password", "accessKey", "secretKey", "secretAccessKey", "token"), key
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj)
    if kind == "configmap":
        # The document is readable by anyone who can read ConfigMaps: it names the Secret (as the spec
        # does) and holds nothing of its contents.
        document = json.loads(obj["data"][names.CONFIG_KEY])
        walk(document)
        assert document["spec"]["output"]["credentialsSecretRef"] == ref


@pytest.mark.parametrize("kind", JOB_BUILDERS)
@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ((), {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:28333"}),
        (
            (set_("spec.output.region", "eu-west-3"), delete("spec.output.endpoint")),
            {"AWS_DEFAULT_REGION": "eu-west-3"},
        ),
        ((delete("spec.output.region"), delete("spec.output.endpoint")), {"AWS_DEFAULT_REGION": "us-east-1"}),
    ],
    ids=["tiny", "region", "aws-defaults"],
)
def test_s3_connection_env(kind: str, edits: tuple[Edit, ...], expected: dict[str, str]) -> None:
    variables = env(build(kind, *edits))
    actual = {k: variables[k]["value"] for k in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL") if k in variables}
    assert actual == expected


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_pods_know_their_run_and_stay_offline(kind: str) -> None:
    ftj = tiny()
    variables = env(serialize(JOB_BUILDERS[kind](ftj, SETTINGS)))
    assert variables["KUBETUNE_JOB_NAME"]["value"] == "tiny"
    assert variables["KUBETUNE_RUN_ID"]["value"] == ftj.spec_hash()
    assert variables["KUBETUNE_JOB_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    assert variables["HF_HUB_OFFLINE"]["value"] == "1"


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_operator_trainer_env_is_appended_in_order(kind: str) -> None:
    settings = OperatorSettings(
        trainer_image=SETTINGS.trainer_image, trainer_env={"B_VAR": "2", "A_VAR": "1"}
    )
    entries = container(build(kind, settings=settings))["env"]
    assert entries[-2:] == [{"name": "A_VAR", "value": "1"}, {"name": "B_VAR", "value": "2"}]

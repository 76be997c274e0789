"""The pure builders: FineTuneJob in, Kubernetes objects out.

Expected-YAML files pin the whole objects built from the tiny example; table tests pin each decision
the builders make. `KUBETUNE_UPDATE_EXPECTED=1 pytest tests/operator` rewrites the expected files.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_cases import NAMESPACE, UID, Edit, delete, serialize, set_, tiny

from kubetune_api import FineTuneJob, RunContext, TrainerInput, parse_trainer_input
from kubetune_api.exit_codes import ExitCode
from kubetune_operator.builders import jobs, names, rbac
from kubetune_operator.builders.trainer_input import trainer_input
from kubetune_operator.observation import child_job, container_outcome
from kubetune_operator.settings import OperatorSettings

EXPECTED = Path(__file__).parent / "expected"
UPDATE = os.environ.get("KUBETUNE_UPDATE_EXPECTED") == "1"
SETTINGS = OperatorSettings(trainer_image="registry.example/kubetune:test")

GPU = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}

Builder = Callable[[FineTuneJob], Any]
JOB_BUILDERS: dict[str, Callable[[FineTuneJob, OperatorSettings], Any]] = {
    "trainer": jobs.trainer_job,
    "exporter": jobs.export_job,
}
BUILDERS: dict[str, Builder] = {
    "trainer-job": lambda f: jobs.trainer_job(f, SETTINGS),
    "export-job": lambda f: jobs.export_job(f, SETTINGS),
    "configmap": jobs.config_map,
    "serviceaccount": rbac.service_account,
    "role": rbac.role,
    "rolebinding": rbac.role_binding,
}


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


# --- helpers ------------------------------------------------------------------------------------------


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(job)["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container(job)["env"]
    by_name = {e["name"]: e for e in entries}
    assert len(by_name) == len(entries), "duplicate env names"
    return by_name


def build(kind: str, *edits: Edit, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    result: dict[str, Any] = serialize(JOB_BUILDERS[kind](tiny(*edits), settings))
    return result


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
    assert labels[names.RUN_ID_LABEL] == ftj.spec_hash()
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


# --- resources: GPUs, CPU, memory, placement -----------------------------------------------------------

NODE_SELECTOR = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
USER_TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Placement:
    id: str
    edits: tuple[Edit, ...]
    gpus: str | None  # the nvidia.com/gpu limit, None when absent
    tolerations: list[dict[str, Any]] | None
    node_selector: dict[str, str] | None
    settings: OperatorSettings = SETTINGS


GPUS_2 = (set_("spec.resources.gpusPerNode", 2), set_("spec.resources.nodeSelector", NODE_SELECTOR))
GPUS_0 = (set_("spec.resources.gpusPerNode", 0), set_("spec.resources.nodeSelector", NODE_SELECTOR))
WITH_TOLERATION = set_("spec.resources.tolerations", [USER_TOLERATION])
CUDA = set_("spec.export.onnx.executionProvider", "cuda")
EXPORT_ON_GPU = OperatorSettings(trainer_image=SETTINGS.trainer_image, export_on_gpu=True)

TRAINER_PLACEMENT = [
    Placement("gpus-2", GPUS_2, "2", [GPU_TOLERATION], NODE_SELECTOR),
    Placement(
        "gpus-2-user-toleration",
        (*GPUS_2, WITH_TOLERATION),
        "2",
        [USER_TOLERATION, GPU_TOLERATION],
        NODE_SELECTOR,
    ),
    # The user's nodeSelector places the trainer whether or not it asks for GPUs.
    Placement("gpus-0", GPUS_0, None, None, NODE_SELECTOR),
    Placement("gpus-0-user-toleration", (*GPUS_0, WITH_TOLERATION), None, [USER_TOLERATION], NODE_SELECTOR),
]
EXPORT_PLACEMENT = [
    Placement("cpu-provider-on-gpu-trainer", GPUS_2, None, None, None),
    Placement("cpu-provider-cpu-trainer", GPUS_0, None, None, None),
    Placement("cuda-provider-gpu-trainer", (*GPUS_2, CUDA), "1", [GPU_TOLERATION], NODE_SELECTOR),
    Placement("cuda-provider-cpu-trainer", (*GPUS_0, CUDA), "1", [GPU_TOLERATION], NODE_SELECTOR),
    Placement("cpu-provider-export-on-gpu", GPUS_2, "1", [GPU_TOLERATION], NODE_SELECTOR, EXPORT_ON_GPU),
    Placement("cpu-provider-export-on-gpu-no-gpus", GPUS_0, None, None, None, EXPORT_ON_GPU),
    Placement("cpu-provider-user-toleration", (*GPUS_2, WITH_TOLERATION), None, [USER_TOLERATION], None),
]


def _check_placement(job: dict[str, Any], case: Placement) -> None:
    resources = container(job)["resources"]
    assert resources.get("limits", {}).get(GPU) == case.gpus
    assert GPU not in resources.get("requests", {})  # extended resources: the limit is the request
    assert pod_spec(job).get("tolerations") == case.tolerations
    assert pod_spec(job).get("nodeSelector") == case.node_selector


@pytest.mark.parametrize("case", TRAINER_PLACEMENT, ids=lambda c: c.id)
def test_trainer_placement(case: Placement) -> None:
    _check_placement(build("trainer", *case.edits, settings=case.settings), case)


@pytest.mark.parametrize("case", EXPORT_PLACEMENT, ids=lambda c: c.id)
def test_export_placement(case: Placement) -> None:
    _check_placement(build("exporter", *case.edits, settings=case.settings), case)


@pytest.mark.parametrize("kind", JOB_BUILDERS)
@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ((), {"cpu": "1", "memory": "2Gi"}),
        (
            (set_("spec.resources.cpu", 4), set_("spec.resources.memory", "16Gi")),
            {"cpu": "4", "memory": "16Gi"},
        ),
        ((set_("spec.resources.cpu", "7500m"), delete("spec.resources.memory")), {"cpu": "7500m"}),
        ((delete("spec.resources.cpu"), set_("spec.resources.memory", "512Mi")), {"memory": "512Mi"}),
        ((delete("spec.resources.cpu"), delete("spec.resources.memory")), None),
    ],
    ids=["tiny", "int-cpu", "cpu-only", "memory-only", "none"],
)
def test_cpu_and_memory_requests_equal_limits(kind: str, edits: tuple[Edit, ...], expected: Any) -> None:
    resources = container(build(kind, *edits))["resources"]
    assert resources.get("requests") == expected
    assert resources.get("limits") == expected


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_gpu_limit_without_cpu_or_memory(kind: str) -> None:
    edits = (delete("spec.resources.cpu"), delete("spec.resources.memory"), *GPUS_2, CUDA)
    resources = container(build(kind, *edits))["resources"]
    assert resources == {"limits": {GPU: "2" if kind == "trainer" else "1"}}


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_image_comes_from_the_spec_or_the_operator_settings(kind: str) -> None:
    assert container(build(kind))["image"] == SETTINGS.trainer_image
    assert container(build(kind))["imagePullPolicy"] == SETTINGS.image_pull_policy
    override = set_("spec.resources.image", "registry.example/custom:1")
    assert container(build(kind, override))["image"] == "registry.example/custom:1"


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_priority_class_is_passed_through(kind: str) -> None:
    assert "priorityClassName" not in pod_spec(build(kind))
    job = build(kind, set_("spec.resources.priorityClassName", "training-low"))
    assert pod_spec(job)["priorityClassName"] == "training-low"


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


# --- Job policy ---------------------------------------------------------------------------------------


def test_permanent_exit_codes_are_the_trainers_known_errors() -> None:
    retriable = {ExitCode.UNEXPECTED.value, ExitCode.PREEMPTED.value}
    assert set(jobs.PERMANENT_EXIT_CODES) == {c.value for c in ExitCode} - retriable
    assert set(jobs.PERMANENT_EXIT_CODES) == {c.value for c in ExitCode if c.permanent}
    assert jobs.PREEMPTED_EXIT_CODE == ExitCode.PREEMPTED
    # Plain ints: what the API server and the expected YAML hold.
    assert {type(c) for c in [*jobs.PERMANENT_EXIT_CODES, jobs.PREEMPTED_EXIT_CODE]} == {int}


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_pod_failure_policy(kind: str) -> None:
    job = build(kind)
    assert container(job)["name"] == kind
    assert pod_spec(job)["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": kind, "operator": "In", "values": [2, 3, 4, 5, 6]},
        },
        {"action": "Ignore", "onExitCodes": {"containerName": kind, "operator": "In", "values": [7]}},
    ]


def test_the_trainer_gets_time_to_checkpoint_after_sigterm() -> None:
    assert pod_spec(build("trainer"))["terminationGracePeriodSeconds"] == 300
    assert pod_spec(build("exporter"))["terminationGracePeriodSeconds"] == 60


# --- many GPUs, many nodes ----------------------------------------------------------------------------

TRAIN_ARGS = ["-m", "kubetune_trainer.train", "--config", names.CONFIG_PATH]


def test_several_gpus_on_one_node_run_one_process_per_gpu() -> None:
    job = build("trainer", set_("spec.resources.gpusPerNode", 4))
    assert container(job)["command"] == [
        "python",
        "-m",
        "kubetune_trainer.launch",
        "--nproc-per-node=4",
        "--standalone",
        *TRAIN_ARGS,
    ]
    assert container(job)["resources"]["limits"][GPU] == "4"
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "270"  # within the 300 s grace period
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(job)["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod_spec(job)["volumes"]
    assert "dshm" not in str(build("trainer"))  # one process needs no shared memory
    assert "completionMode" not in job["spec"] and "subdomain" not in pod_spec(job)


def test_several_nodes_run_an_indexed_job_that_meets_at_pod_zero() -> None:
    job = build("trainer", set_("spec.resources.gpusPerNode", 2), set_("spec.resources.nodes", 3))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert pod_spec(job)["subdomain"] == "tiny-train"
    assert pod_spec(job)["affinity"] == {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": "tiny-train"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    assert container(job)["command"] == [
        "python",
        "-m",
        "kubetune_trainer.launch",
        "--nproc-per-node=2",
        "--nnodes=3",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr=tiny-train-0.tiny-train.{NAMESPACE}.svc",
        "--master-port=29500",
        *TRAIN_ARGS,
    ]


def test_cpu_nodes_run_one_process_each() -> None:
    job = build("trainer", set_("spec.resources.gpusPerNode", 0), set_("spec.resources.nodes", 2))
    assert "--nproc-per-node=1" in container(job)["command"]
    assert GPU not in container(job)["resources"]["limits"]


def test_the_headless_service_names_the_trainer_pods() -> None:
    ftj = tiny(set_("spec.resources.nodes", 2))
    service = serialize(jobs.trainer_service(ftj))
    assert service["metadata"]["name"] == "tiny-train"
    assert service["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    assert service["spec"] == {
        "clusterIP": "None",
        "selector": {"batch.kubernetes.io/job-name": "tiny-train"},
        "publishNotReadyAddresses": True,
        "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500}],
    }


@dataclass(frozen=True)
class JobPolicy:
    id: str
    edits: tuple[Edit, ...]
    trainer: dict[str, Any]
    exporter: dict[str, Any] = field(default_factory=dict)


JOB_POLICIES = [
    JobPolicy(
        "tiny",
        (),
        {"backoffLimit": 2, "activeDeadlineSeconds": 1800, "suspend": False},
        {"backoffLimit": 1, "activeDeadlineSeconds": 1800, "suspend": False},
    ),
    JobPolicy(
        "no-retries-no-deadline",
        (set_("spec.backoffLimit", 0), delete("spec.activeDeadlineSeconds")),
        {"backoffLimit": 0, "activeDeadlineSeconds": None},
        {"backoffLimit": 0, "activeDeadlineSeconds": None},
    ),
    JobPolicy(
        "many-retries-suspended",
        (set_("spec.backoffLimit", 7), set_("spec.suspend", True)),
        {"backoffLimit": 7, "suspend": True},
        {"backoffLimit": 1, "suspend": True},
    ),
]


@pytest.mark.parametrize("case", JOB_POLICIES, ids=lambda c: c.id)
@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_job_policy_fields(case: JobPolicy, kind: str) -> None:
    spec = build(kind, *case.edits)["spec"]
    expected = case.trainer if kind == "trainer" else case.exporter
    assert {k: spec.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("kind", "module"), [("trainer", "kubetune_trainer.train"), ("exporter", "kubetune_trainer.export")]
)
def test_each_job_runs_its_own_entrypoint(kind: str, module: str) -> None:
    assert container(build(kind))["command"] == ["python", "-m", module, "--config", names.CONFIG_PATH]


# --- the trainer input document ------------------------------------------------------------------------


def config_document(ftj: FineTuneJob) -> str:
    data: dict[str, str] = serialize(jobs.config_map(ftj))["data"]
    assert set(data) == {names.CONFIG_KEY}
    return data[names.CONFIG_KEY]


def test_configmap_holds_the_trainer_input() -> None:
    ftj = tiny()
    read_back = TrainerInput.model_validate_json(config_document(ftj))
    assert read_back == trainer_input(ftj)
    assert read_back.spec == ftj.spec  # the spec as it is: the trainer reads the API model
    assert read_back.run == RunContext(
        name="tiny",
        namespace=NAMESPACE,
        run_id=ftj.spec_hash(),
        # Each spec revision gets its own prefix under spec.output.uri, named by the run id.
        output_root=f"s3://kubetune-dev/runs/tiny/{ftj.spec_hash()}",
    )
    assert read_back.spec.spec_hash() == ftj.spec_hash()
    # Unset fields are left out rather than written as null.
    assert "null" not in config_document(ftj)


SPEC_VARIANTS = {
    "qlora": (set_("spec.method", "qlora"),),
    "qlora-4bit-options": (
        set_("spec.method", "qlora"),
        set_("spec.quantization", {"quantType": "fp4", "doubleQuant": False, "computeDtype": "fp32"}),
    ),
    "qlora-8bit": (set_("spec.method", "qlora"), set_("spec.quantization", {"bits": 8})),
    "full": (set_("spec.method", "full"), delete("spec.lora")),
    "dora": (set_("spec.lora.useDora", True),),
    "target-modules": (set_("spec.lora.targetModules", ["q_proj", "v_proj"]),),
    "no-template": (delete("spec.dataset.textTemplate"),),
    "format-text": (set_("spec.dataset.format", "text"), delete("spec.dataset.textTemplate")),
    "chat": (set_("spec.dataset.format", "chat"), delete("spec.dataset.textTemplate")),
    "eval-uri": (
        delete("spec.dataset.evalRatio"),
        set_("spec.dataset.evalUri", "s3://kubetune-dev/d/eval.jsonl"),
    ),
    "epochs-warmup": (
        delete("spec.training.maxSteps"),
        set_("spec.training.epochs", 2),
        set_("spec.training.warmupRatio", 0.1),
    ),
    "precision-auto-gpu": (
        set_("spec.training.precision", "auto"),
        set_("spec.resources.gpusPerNode", 1),
    ),
    "packing": (set_("spec.training.packing", True),),
    "evaluation": (
        set_("spec.training.evalSteps", 5),
        set_("spec.training.saveSteps", 10),
        set_(
            "spec.evaluation",
            {"metrics": ["f1", "rougeL"], "samples": 16, "earlyStopping": {"metric": "f1", "patience": 2}},
        ),
    ),
    "int4-cuda": (
        set_("spec.export.onnx.executionProvider", "cuda"),
        set_("spec.export.onnx.precision", "int4"),
        set_("spec.export.onnx.int4", {"algorithm": "rtn", "lastMatmul": "int4", "accuracyLevel": 4}),
    ),
    "onnx-adapter": (set_("spec.export.onnx.adapter", True),),
    "base-model-revision": (set_("spec.baseModel.revision", "abc123"),),
    # Implemented by the trainer now; the operator used to refuse them.
    "onnx-disabled": (set_("spec.export.onnx.enabled", False),),
    "no-merged-model": (set_("spec.export.mergedModel", False),),
    "export-disabled": (set_("spec.export.enabled", False),),
    "same-secret-everywhere": (
        set_("spec.baseModel.credentialsSecretRef", {"name": "kubetune-s3"}),
        set_("spec.dataset.credentialsSecretRef", {"name": "kubetune-s3"}),
    ),
    "ambient-credentials": (delete("spec.output.credentialsSecretRef"),),
}


@pytest.mark.parametrize("edits", SPEC_VARIANTS.values(), ids=SPEC_VARIANTS.keys())
def test_every_spec_reaches_the_trainer_unchanged(edits: tuple[Edit, ...]) -> None:
    ftj = tiny(*edits)
    read_back = parse_trainer_input(config_document(ftj))
    assert read_back.spec == ftj.spec
    assert read_back.run.run_id == ftj.spec_hash() == read_back.spec.spec_hash()


@pytest.mark.parametrize(
    ("status", "resumes"),
    [
        ({}, False),
        ({"lastCheckpoint": "own"}, True),
        ({"lastCheckpoint": "own", "runId": "0123456789ab"}, False),  # another run's status
        ({"lastCheckpoint": "foreign"}, False),  # reported late by a stale trainer
    ],
    ids=["none", "own", "other-run", "foreign-uri"],
)
def test_resume_from_is_the_current_runs_last_checkpoint(status: dict[str, Any], resumes: bool) -> None:
    run_id = tiny().spec_hash()
    uris = {
        "own": f"s3://kubetune-dev/runs/tiny/{run_id}/checkpoints/checkpoint-40",
        "foreign": "s3://kubetune-dev/runs/tiny/000000000000/checkpoints/checkpoint-40",
    }
    if "lastCheckpoint" in status:
        status = {
            "runId": run_id,
            **status,
            "lastCheckpoint": {"step": 40, "uri": uris[status["lastCheckpoint"]]},
        }
    ftj = tiny(set_("status", status))
    resume_from = parse_trainer_input(config_document(ftj)).run.resume_from
    assert resume_from == (ftj.status.last_checkpoint if resumes else None)
    assert (resume_from is not None) is resumes

"""The trainer and export Jobs: resources and placement, the podFailurePolicy built from the API's exit
codes, retries and deadlines, and the shape of many-GPU and many-node runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from builder_cases import GPU, GPU_TOLERATION, JOB_BUILDERS, SETTINGS, build, container, env, pod_spec
from operator_cases import Edit, delete, set_

from kubetune_api.exit_codes import ExitCode
from kubetune_operator.builders import jobs, names
from kubetune_operator.settings import OperatorSettings

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
CUDA = set_(
    "spec.export.targets", [{"precision": "int4"}, {"precision": "fp16", "executionProvider": "cuda"}]
)
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
    expected = {**(expected or {}), "ephemeral-storage": SETTINGS.workspace_size}
    assert resources.get("requests") == expected
    assert resources.get("limits") == expected


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_the_workspace_size_is_the_ephemeral_storage_request_and_limit_unless_unset(kind: str) -> None:
    sized = container(build(kind, settings=OperatorSettings(workspace_size="200Gi")))["resources"]
    assert sized["requests"]["ephemeral-storage"] == sized["limits"]["ephemeral-storage"] == "200Gi"
    unsized = container(build(kind, settings=OperatorSettings(workspace_size=None)))["resources"]
    assert "ephemeral-storage" not in unsized["requests"] | unsized["limits"]


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_gpu_limit_without_cpu_or_memory(kind: str) -> None:
    edits = (delete("spec.resources.cpu"), delete("spec.resources.memory"), *GPUS_2, CUDA)
    resources = container(build(kind, *edits))["resources"]
    storage = {"ephemeral-storage": SETTINGS.workspace_size}
    assert resources == {"limits": {GPU: "2" if kind == "trainer" else "1", **storage}, "requests": storage}


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


# --- Job policy ---------------------------------------------------------------------------------------


def test_permanent_exit_codes_are_the_trainers_known_errors() -> None:
    retriable = {ExitCode.UNEXPECTED.value, ExitCode.PREEMPTED.value, ExitCode.CHECKPOINT_LOST.value}
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
        # A lost checkpoint counts, even on a disrupted pod: the first matching rule wins.
        {"action": "Count", "onExitCodes": {"containerName": kind, "operator": "In", "values": [8]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": kind, "operator": "In", "values": [2, 3, 4, 5, 6, 9]},
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
    assert "completionMode" not in job["spec"] and "subdomain" not in pod_spec(job)


# --- Pod Security "restricted" (the apiserver's own check: tests/e2e/test_pod_security.py) -------------


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_pods_run_as_the_configured_non_root_user_without_privileges(kind: str) -> None:
    settings = OperatorSettings(pod_uid=2000, pod_gid=3000)
    job = build(kind, settings=settings)
    assert pod_spec(job)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 3000,
        "fsGroup": 3000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(job)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


@pytest.mark.parametrize("kind", JOB_BUILDERS)
def test_every_writable_path_is_an_empty_dir_and_caches_point_there(kind: str) -> None:
    job = build(kind)
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    writable = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/workspace": "workspace", "/cache": "cache", "/tmp": "tmp", "/dev/shm": "dshm"}
    assert all("emptyDir" in volumes[name] for name in writable.values())
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory"}  # NCCL and DataLoader workers
    values = {name: v.get("value", "") for name, v in env(job).items()}
    for cache in ("HF_HOME", "XDG_CACHE_HOME", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR", "MPLCONFIGDIR"):
        assert values[cache].startswith("/cache"), cache


def test_only_the_trainer_gets_a_service_account_token() -> None:
    """The trainer patches its FineTuneJob's progress; the export pod needs no API access."""
    assert pod_spec(build("trainer"))["automountServiceAccountToken"] is True
    assert pod_spec(build("exporter"))["automountServiceAccountToken"] is False


def test_cpu_nodes_run_one_process_each() -> None:
    job = build("trainer", set_("spec.resources.gpusPerNode", 0), set_("spec.resources.nodes", 2))
    assert "--nproc-per-node=1" in container(job)["command"]
    assert GPU not in container(job)["resources"]["limits"]


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

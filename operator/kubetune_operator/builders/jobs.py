"""The trainer and export Jobs, and the ConfigMap holding the run's input (kubetune_api.TrainerInput)."""

from __future__ import annotations

from kubernetes import client

from kubetune_api import FineTuneJob
from kubetune_api.exit_codes import PERMANENT, ExitCode
from kubetune_operator.builders import names
from kubetune_operator.builders.trainer_input import document
from kubetune_operator.settings import OperatorSettings

GPU_RESOURCE = "nvidia.com/gpu"
# GPU node pools are commonly tainted so that only GPU workloads land there.
GPU_TOLERATION = client.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
# The trainer's exit codes for errors a retry cannot fix: invalid config, data, storage/credentials,
# model, export. Plain ints, as the API server (and YAML) want them.
PERMANENT_EXIT_CODES = sorted(int(code) for code in PERMANENT)
# Stopped on SIGTERM (its own, or a peer pod's) after saving a checkpoint: the replacement resumes, and
# the stop is not the job's fault, so it does not count against backoffLimit.
PREEMPTED_EXIT_CODE = int(ExitCode.PREEMPTED)
# Stopped on SIGTERM but its checkpoint did not upload: work is lost, so the stop counts against
# backoffLimit even when the pod was evicted or preempted.
CHECKPOINT_LOST_EXIT_CODE = int(ExitCode.CHECKPOINT_LOST)
WORKSPACE = "/workspace"
# The root filesystem is read-only (Pod Security "restricted" and good hygiene): everything a run
# writes goes to these emptyDirs. Caches of Hugging Face, Triton, TorchInductor and matplotlib are
# pointed at CACHE_DIR by the environment.
CACHE_DIR = "/cache"
TMP_DIR = "/tmp"
SHM_DIR = "/dev/shm"
# Time between SIGTERM and SIGKILL: enough to finish the current step and upload its checkpoint.
TRAINER_GRACE_SECONDS = 300
EXPORTER_GRACE_SECONDS = 60
RENDEZVOUS_PORT = 29500


def config_map(ftj: FineTuneJob) -> client.V1ConfigMap:
    """The run's input document, which both Jobs read from `--config` (names.CONFIG_PATH)."""
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=names.child_metadata(ftj, names.config_map_name(ftj)),
        data={names.CONFIG_KEY: document(ftj)},
    )


def is_distributed(ftj: FineTuneJob) -> bool:
    """More than one training process: several GPUs per pod, or several pods."""
    return ftj.spec.resources.nodes > 1 or ftj.spec.resources.gpus_per_node > 1


def trainer_command(ftj: FineTuneJob) -> list[str]:
    """One process, or torchrun with one process per GPU on each pod. The pods of a multi-node JobSet
    find each other through its headless Service: pod 0 hosts the rendezvous."""
    train = ["-m", "kubetune_trainer.train", "--config", names.CONFIG_PATH]
    if not is_distributed(ftj):
        return ["python", *train]
    resources = ftj.spec.resources
    # torchrun, keeping the trainer's exit codes for podFailurePolicy (see kubetune_trainer.launch).
    launcher = [
        "python",
        "-m",
        "kubetune_trainer.launch",
        f"--nproc-per-node={max(resources.gpus_per_node, 1)}",
    ]
    if resources.nodes == 1:
        return [*launcher, "--standalone", *train]
    return [
        *launcher,
        f"--nnodes={resources.nodes}",
        # The Job controller sets JOB_COMPLETION_INDEX (0..nodes-1) in each pod of an Indexed Job.
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={names.rendezvous_host(ftj)}",
        f"--master-port={RENDEZVOUS_PORT}",
        *train,
    ]


def trainer_job(
    ftj: FineTuneJob, settings: OperatorSettings, active_deadline_seconds: int | None = None
) -> client.V1Job:
    """The single-node trainer (nodes > 1 runs as a JobSet: builders/jobset.py)."""
    return _job(
        ftj,
        names.trainer_job_name(ftj),
        names.TRAINER,
        job_spec(
            ftj,
            settings,
            component=names.TRAINER,
            command=trainer_command(ftj),
            gpus=ftj.spec.resources.gpus_per_node,
            backoff_limit=ftj.spec.backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
        ),
    )


def export_job(
    ftj: FineTuneJob, settings: OperatorSettings, active_deadline_seconds: int | None = None
) -> client.V1Job:
    """`active_deadline_seconds`: what is left of the run's deadline (policies/deadline.py)."""
    # A CPU export needs no GPU: keep the GPUs free for training unless told otherwise.
    on_gpu = any(t.execution_provider == "cuda" for t in ftj.spec.export.targets) or (
        settings.export_on_gpu and ftj.spec.resources.gpus_per_node > 0
    )
    return _job(
        ftj,
        names.export_job_name(ftj),
        names.EXPORTER,
        job_spec(
            ftj,
            settings,
            component=names.EXPORTER,
            command=["python", "-m", "kubetune_trainer.export", "--config", names.CONFIG_PATH],
            gpus=1 if on_gpu else 0,
            backoff_limit=min(ftj.spec.backoff_limit, 1),
            active_deadline_seconds=active_deadline_seconds,
        ),
    )


# The plan pod reads the data and the model's config and tokenizer (no weights): a CPU and the memory
# of torch, transformers and a tokenizer are enough.
PLAN_CPU = "1"
PLAN_MEMORY = "2Gi"


def plan_job(ftj: FineTuneJob, settings: OperatorSettings) -> client.V1Job:
    """The dry run's Job (spec.dryRun): the trainer's image, identity, security context and S3
    credentials, but no GPU, no GPU node selector or tolerations, and a small CPU and memory. Never
    queued: it binds no accelerator."""
    spec = job_spec(
        ftj,
        settings,
        component=names.PLANNER,
        command=["python", "-m", "kubetune_trainer.plan", "--config", names.CONFIG_PATH],
        gpus=0,
        backoff_limit=min(ftj.spec.backoff_limit, 1),
    )
    pod = spec.template.spec
    assert pod is not None  # job_spec always builds the pod
    small = {"cpu": PLAN_CPU, "memory": PLAN_MEMORY}
    if settings.workspace_size is not None:
        small["ephemeral-storage"] = str(settings.workspace_size)
    pod.containers[0].resources = client.V1ResourceRequirements(limits=dict(small), requests=dict(small))
    pod.tolerations = None
    pod.node_selector = None
    pod.priority_class_name = None
    spec.suspend = ftj.spec.suspend
    metadata = names.child_metadata(ftj, names.plan_job_name(ftj), names.PLANNER)
    return client.V1Job(api_version="batch/v1", kind="Job", metadata=metadata, spec=spec)


def created_suspended(ftj: FineTuneJob) -> bool:
    """A queued workload starts suspended, and Kueue alone unsuspends it on admission."""
    return ftj.spec.suspend or ftj.queue_name is not None


def _job(ftj: FineTuneJob, name: str, component: str, spec: client.V1JobSpec) -> client.V1Job:
    metadata = names.child_metadata(ftj, name, component, queued=True)
    spec.suspend = created_suspended(ftj)
    return client.V1Job(api_version="batch/v1", kind="Job", metadata=metadata, spec=spec)


def job_spec(
    ftj: FineTuneJob,
    settings: OperatorSettings,
    *,
    component: str,
    command: list[str],
    gpus: int,
    backoff_limit: int,
    active_deadline_seconds: int | None = None,
    pods: int = 1,
    failure_rules: list[client.V1PodFailurePolicyRule] | None = None,
) -> client.V1JobSpec:
    """A Job of one pod, or (pods > 1) an Indexed Job: the JobSet's trainer group."""
    pod_spec = _pod_spec(ftj, settings, component, command, gpus)
    return client.V1JobSpec(
        backoff_limit=backoff_limit,
        completion_mode="Indexed" if pods > 1 else None,
        completions=pods if pods > 1 else None,
        parallelism=pods if pods > 1 else None,
        # What is left of the run's deadline; unset: all of it (a new run).
        active_deadline_seconds=active_deadline_seconds or ftj.spec.active_deadline_seconds,
        pod_failure_policy=client.V1PodFailurePolicy(
            rules=failure_rules if failure_rules is not None else pod_failure_rules(component)
        ),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels=names.labels(ftj, component)),
            spec=pod_spec,
        ),
    )


def pod_failure_rules(component: str) -> list[client.V1PodFailurePolicyRule]:
    """A one-pod Job retries its pod itself, up to backoffLimit."""
    return [
        client.V1PodFailurePolicyRule(
            action="Count",
            on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=component, operator="In", values=[CHECKPOINT_LOST_EXIT_CODE]
            ),
        ),
        # Preemption, eviction or node loss is not the job's fault: don't count it.
        client.V1PodFailurePolicyRule(
            action="Ignore",
            on_pod_conditions=[
                client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
            ],
        ),
        # Bad data, bad spec, bad credentials: retrying cannot help.
        client.V1PodFailurePolicyRule(
            action="FailJob",
            on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=component, operator="In", values=PERMANENT_EXIT_CODES
            ),
        ),
        # Checkpointed and stopped on SIGTERM (deleted, drained, a peer lost): resume.
        client.V1PodFailurePolicyRule(
            action="Ignore",
            on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                container_name=component, operator="In", values=[PREEMPTED_EXIT_CODE]
            ),
        ),
    ]


def _pod_spec(
    ftj: FineTuneJob, settings: OperatorSettings, component: str, command: list[str], gpus: int
) -> client.V1PodSpec:
    spec = ftj.spec
    resources = spec.resources
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    for key, value in (
        ("cpu", resources.cpu),
        ("memory", resources.memory),
        # Bounds the emptyDirs on the node's disk: the workspace holds the model, data and checkpoints.
        ("ephemeral-storage", settings.workspace_size),
    ):
        if value is not None:
            limits[key] = requests[key] = str(value)
    tolerations = [client.V1Toleration(**t.model_dump(exclude_none=True)) for t in resources.tolerations]
    if gpus and not any(t.key == GPU_RESOURCE for t in tolerations):
        tolerations.append(GPU_TOLERATION)
    container = client.V1Container(
        name=component,
        image=resources.image or settings.trainer_image,
        image_pull_policy=settings.image_pull_policy,
        command=command,
        working_dir=WORKSPACE,
        env=_env(ftj, settings),
        resources=client.V1ResourceRequirements(limits=limits or None, requests=requests or None),
        volume_mounts=[
            client.V1VolumeMount(name="config", mount_path=names.CONFIG_MOUNT, read_only=True),
            client.V1VolumeMount(name="workspace", mount_path=WORKSPACE),
            client.V1VolumeMount(name="cache", mount_path=CACHE_DIR),
            client.V1VolumeMount(name="tmp", mount_path=TMP_DIR),
            client.V1VolumeMount(name="dshm", mount_path=SHM_DIR),
        ],
        termination_message_policy="FallbackToLogsOnError",
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=True,
            run_as_non_root=True,
        ),
    )
    return client.V1PodSpec(
        restart_policy="Never",
        service_account_name=names.service_account_name(ftj),
        # Only the trainer reports progress through the API; the export pod gets no token.
        automount_service_account_token=component == names.TRAINER,
        security_context=pod_security_context(settings),
        termination_grace_period_seconds=TRAINER_GRACE_SECONDS
        if component == names.TRAINER
        else EXPORTER_GRACE_SECONDS,
        containers=[container],
        volumes=[
            client.V1Volume(
                name="config",
                config_map=client.V1ConfigMapVolumeSource(name=names.config_map_name(ftj)),
            ),
            client.V1Volume(name="workspace", empty_dir=client.V1EmptyDirVolumeSource()),
            client.V1Volume(name="cache", empty_dir=client.V1EmptyDirVolumeSource()),
            client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
            # NCCL and DataLoader workers exchange tensors through /dev/shm; a runtime's default is
            # 64 MiB. Memory-backed, so it counts against the memory limit.
            client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory")),
        ],
        # The user's node selector places the trainer; a CPU-only export may run anywhere.
        node_selector=dict(resources.node_selector)
        if resources.node_selector and (component == names.TRAINER or gpus)
        else None,
        tolerations=tolerations or None,
        priority_class_name=resources.priority_class_name,
    )


def pod_security_context(settings: OperatorSettings) -> client.V1PodSecurityContext:
    """Pod Security "restricted": a fixed non-root identity (the image's user by default), whose group
    owns the volumes, and the runtime's default seccomp profile."""
    return client.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=settings.pod_uid,
        run_as_group=settings.pod_gid,
        fs_group=settings.pod_gid,
        seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
    )


def _env(ftj: FineTuneJob, settings: OperatorSettings) -> list[client.V1EnvVar]:
    output = ftj.spec.output
    env = [
        client.V1EnvVar(name="KUBETUNE_JOB_NAME", value=str(ftj.metadata.name)),
        client.V1EnvVar(
            name="KUBETUNE_JOB_NAMESPACE",
            value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="metadata.namespace")
            ),
        ),
        client.V1EnvVar(name="KUBETUNE_RUN_ID", value=ftj.spec_hash()),
        # Models and data come from the spec's URIs only, never from a hub.
        client.V1EnvVar(name="HF_HUB_OFFLINE", value="1"),
        client.V1EnvVar(name="HF_HOME", value=f"{CACHE_DIR}/huggingface"),
        client.V1EnvVar(name="XDG_CACHE_HOME", value=CACHE_DIR),
        client.V1EnvVar(name="TRITON_CACHE_DIR", value=f"{CACHE_DIR}/triton"),
        client.V1EnvVar(name="TORCHINDUCTOR_CACHE_DIR", value=f"{CACHE_DIR}/torchinductor"),
        client.V1EnvVar(name="MPLCONFIGDIR", value=f"{CACHE_DIR}/matplotlib"),
        # Downloads and outputs go to the pod's scratch volume, not the container's /tmp.
        client.V1EnvVar(name="KUBETUNE_WORKDIR", value=WORKSPACE),
        client.V1EnvVar(name="TOKENIZERS_PARALLELISM", value="false"),
        client.V1EnvVar(name="AWS_DEFAULT_REGION", value=output.region or "us-east-1"),
        # boto3 >= 1.36 sends checksums that many S3-compatible stores reject.
        client.V1EnvVar(name="AWS_REQUEST_CHECKSUM_CALCULATION", value="when_required"),
        client.V1EnvVar(name="AWS_RESPONSE_CHECKSUM_VALIDATION", value="when_required"),
    ]
    if output.endpoint:
        env.append(client.V1EnvVar(name="AWS_ENDPOINT_URL", value=output.endpoint))
    ref = output.credentials_secret_ref
    if ref is not None:
        for var, key in (
            ("AWS_ACCESS_KEY_ID", ref.access_key_id_key),
            ("AWS_SECRET_ACCESS_KEY", ref.secret_access_key_key),
        ):
            env.append(
                client.V1EnvVar(
                    name=var,
                    value_from=client.V1EnvVarSource(
                        secret_key_ref=client.V1SecretKeySelector(name=ref.name, key=key)
                    ),
                )
            )
    if is_distributed(ftj):
        # How long torchrun lets its workers checkpoint after SIGTERM; the pod's grace period is longer.
        env.append(
            client.V1EnvVar(name="TORCH_ELASTIC_SHUTDOWN_TIMEOUT", value=str(TRAINER_GRACE_SECONDS - 30))
        )
    env += [client.V1EnvVar(name=k, value=v) for k, v in sorted(settings.trainer_env.items())]
    return env

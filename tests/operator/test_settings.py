"""OperatorSettings.from_env: every setting from one KUBETUNE_* variable, checked on load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubetune_operator.settings import OperatorSettings


def test_defaults_without_variables() -> None:
    assert OperatorSettings.from_env({}) == OperatorSettings()
    settings = OperatorSettings.from_env({"PATH": "/bin", "KUBETUNE": "x", "OTHER_WORKER_LIMIT": "1"})
    assert settings == OperatorSettings()


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"KUBETUNE_TRAINER_IMAGE": "registry.example/kt:1"}, "trainer_image", "registry.example/kt:1"),
        ({"KUBETUNE_IMAGE_PULL_POLICY": "Always"}, "image_pull_policy", "Always"),
        ({"KUBETUNE_NAMESPACES": "team-a"}, "namespaces", ["team-a"]),
        ({"KUBETUNE_NAMESPACES": " team-a, team-b ,,"}, "namespaces", ["team-a", "team-b"]),
        ({"KUBETUNE_NAMESPACES": ""}, "namespaces", []),
        (
            {"KUBETUNE_TRAINER_ENV": '{"HF_HOME": "/cache", "X": "1"}'},
            "trainer_env",
            {"HF_HOME": "/cache", "X": "1"},
        ),
        ({"KUBETUNE_TRAINER_ENV": "{}"}, "trainer_env", {}),
        ({"KUBETUNE_WATCH_SERVER_TIMEOUT": "60"}, "watch_server_timeout", 60),
        ({"KUBETUNE_WATCH_CLIENT_TIMEOUT": "90"}, "watch_client_timeout", 90),
        ({"KUBETUNE_LIVENESS_PORT": "8081"}, "liveness_port", 8081),
        ({"KUBETUNE_METRICS_PORT": "0"}, "metrics_port", 0),
        ({"KUBETUNE_RESYNC_SECONDS": "0.5"}, "resync_seconds", 0.5),
        ({"KUBETUNE_RESYNC_SECONDS": "10"}, "resync_seconds", 10.0),
        ({"KUBETUNE_POD_UID": "2000"}, "pod_uid", 2000),
        ({"KUBETUNE_POD_GID": "3000"}, "pod_gid", 3000),
        ({"KUBETUNE_WORKSPACE_SIZE": "200Gi"}, "workspace_size", "200Gi"),
        ({"KUBETUNE_WORKSPACE_SIZE": ""}, "workspace_size", None),
        ({"KUBETUNE_FINISHED_JOB_TTL_SECONDS": "60"}, "finished_job_ttl_seconds", 60),
        ({"KUBETUNE_FINISHED_JOB_TTL_SECONDS": ""}, "finished_job_ttl_seconds", None),
        ({"KUBETUNE_LEADER_ELECTION": "false"}, "leader_election", False),
        ({"KUBETUNE_LEASE_NAMESPACE": "ops"}, "lease_namespace", "ops"),
        ({"KUBETUNE_EXPORT_ON_GPU": "true"}, "export_on_gpu", True),
        ({"KUBETUNE_EXPORT_ON_GPU": "True"}, "export_on_gpu", True),
        ({"KUBETUNE_EXPORT_ON_GPU": "1"}, "export_on_gpu", True),
        ({"KUBETUNE_EXPORT_ON_GPU": "false"}, "export_on_gpu", False),
        ({"KUBETUNE_EXPORT_ON_GPU": "0"}, "export_on_gpu", False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_parses_each_kind_of_value(env: dict[str, str], field: str, expected: Any) -> None:
    settings = OperatorSettings.from_env(env)
    assert getattr(settings, field) == expected
    others = {k: v for k, v in settings.model_dump().items() if k != field}
    assert others == {k: v for k, v in OperatorSettings().model_dump().items() if k != field}


def test_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBETUNE_RESYNC_SECONDS", "5")
    monkeypatch.setenv("KUBETUNE_NAMESPACES", "a,b")
    settings = OperatorSettings.from_env()
    assert (settings.resync_seconds, settings.namespaces) == (5.0, ["a", "b"])


def test_settings_are_frozen() -> None:
    settings = OperatorSettings()
    with pytest.raises(ValidationError):
        settings.resync_seconds = 1


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("KUBETUNE_LIVENESS_PORT", "many", "liveness_port"),
        ("KUBETUNE_LIVENESS_PORT", "1.5", "liveness_port"),
        ("KUBETUNE_POD_UID", "0", "pod_uid"),
        ("KUBETUNE_WORKSPACE_SIZE", "lots", "workspace_size"),
        ("KUBETUNE_RESYNC_SECONDS", "0", "resync_seconds"),
        ("KUBETUNE_RESYNC_SECONDS", "soon", "resync_seconds"),
        ("KUBETUNE_WATCH_SERVER_TIMEOUT", "-1", "watch_server_timeout"),
        ("KUBETUNE_LIVENESS_PORT", "0", "liveness_port"),
        ("KUBETUNE_METRICS_PORT", "-1", "metrics_port"),
        ("KUBETUNE_EXPORT_ON_GPU", "maybe", "export_on_gpu"),
        ("KUBETUNE_TRAINER_ENV", '["A=1"]', "trainer_env"),
        ("KUBETUNE_TRAINER_ENV", '{"A": 1}', "trainer_env"),
        ("KUBETUNE_TRAINER_ENV", '"A=1"', "trainer_env"),
        pytest.param(
            "KUBETUNE_TRAINER_ENV",
            "A=1",
            "trainer_env",
            id="KUBETUNE_TRAINER_ENV-not-json",
        ),
    ],
)
def test_a_bad_value_is_a_validation_error_naming_the_setting(variable: str, value: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        OperatorSettings.from_env({variable: value})
    assert field in str(info.value)
    assert [e["loc"][0] for e in info.value.errors()] == [field]

"""A FineTuneSweep on the local cluster, through the operator installed with its chart: a 2 x 2 grid
over the tiny model, two trials at a time, ending with every trial's metric and the best trial's
artifacts (its manifest in S3)."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from e2e_support import events_for, events_once, tiny_job
from support import wait_for

pytestmark = pytest.mark.cluster

GROUP, VERSION = "kubetune.dev", "v1alpha1"
FINISHED = {"Succeeded", "Failed"}


def sweep_body(name: str, seeded: dict[str, str]) -> dict[str, Any]:
    spec = tiny_job("template", seeded)["spec"]
    # A sweep reads its finished trials, so they must not expire; and only the adapter and the
    # manifest are exported, to keep four trials fast on two cores.
    del spec["ttlSecondsAfterFinished"]
    spec["export"] = {"targets": [], "mergedModel": False, "evalSamples": 0}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneSweep",
        "metadata": {"name": name},
        "spec": {
            "algorithm": "grid",
            "parallelism": 2,
            "parameters": [
                {"path": "training.learningRate", "values": [0.0001, 0.01]},
                {"path": "lora.r", "values": [4, 8]},
            ],
            "objective": {"metric": "evalLoss", "direction": "minimize"},
            "template": {"metadata": {"labels": {"team": "ml"}}, "spec": spec},
        },
    }


def trials_of(custom: client.CustomObjectsApi, namespace: str, sweep: str) -> list[dict[str, Any]]:
    found = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "finetunejobs", label_selector=f"kubetune.dev/sweep={sweep}"
    )
    return sorted(found["items"], key=lambda o: o["metadata"]["name"])


def s3_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def test_grid_sweep_runs_four_trials_and_reports_the_best(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    s3: Any,
) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, workspace, "finetunesweeps", sweep_body("grid", s3_seeded)
    )
    most_unfinished = 0

    def finished() -> dict[str, Any] | None:
        nonlocal most_unfinished
        unfinished = [
            t
            for t in trials_of(custom, workspace, "grid")
            if (t.get("status") or {}).get("phase") not in FINISHED
        ]
        most_unfinished = max(most_unfinished, len(unfinished))
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", "grid")
        return obj if (obj.get("status") or {}).get("phase") in FINISHED else None

    sweep = wait_for(finished, 900, "the sweep to finish", interval=1)
    status = sweep["status"]
    assert status["phase"] == "Succeeded", status
    assert 1 <= most_unfinished <= 2, f"parallelism 2, but {most_unfinished} trials ran at once"
    assert status["observedGeneration"] == sweep["metadata"]["generation"]
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {
        "Ready": ("True", "Succeeded"),
        "Reconciling": ("False", "Succeeded"),
        "Stalled": ("False", "Succeeded"),
    }
    assert (status["trialsTotal"], status["trialsDone"], status["trialsSucceeded"]) == (4, 4, 4)

    # One FineTuneJob per grid point, named by index, owned by the sweep, with the template's labels.
    trials = {t["metadata"]["name"]: t for t in trials_of(custom, workspace, "grid")}
    assert sorted(trials) == ["grid-0", "grid-1", "grid-2", "grid-3"]
    expected = [(0.0001, 4), (0.0001, 8), (0.01, 4), (0.01, 8)]
    for index, (lr, r) in enumerate(expected):
        child = trials[f"grid-{index}"]
        assert child["metadata"]["labels"]["team"] == "ml"
        [owner] = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "FineTuneSweep",
            sweep["metadata"]["uid"],
            True,
        )
        assert (child["spec"]["training"]["learningRate"], child["spec"]["lora"]["r"]) == (lr, r)
        assert child["status"]["phase"] == "Succeeded"

    # Every trial's metric is the one its FineTuneJob reported, and the best is the lowest.
    reported = {t["name"]: t["metric"] for t in status["trials"]}
    assert reported == {name: t["status"]["metrics"]["evalLoss"] for name, t in trials.items()}
    assert [t["parameters"] for t in status["trials"]] == [
        {"training.learningRate": lr, "lora.r": r} for lr, r in expected
    ]
    best_name = min(reported, key=lambda n: (reported[n], n))
    best = status["bestTrial"]
    assert best["name"] == best_name and best["metric"] == reported[best_name]
    assert best["parameters"] == next(t["parameters"] for t in status["trials"] if t["name"] == best_name)

    # Its artifacts are the best trial's own, and the manifest is in S3.
    assert best["artifacts"] == trials[best_name]["status"]["artifacts"]
    manifest = next(a for a in best["artifacts"] if a["kind"] == "manifest")
    bucket, key = s3_location(manifest["uri"])
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0

    events = events_once(
        core,
        workspace,
        "grid",
        lambda ev: "Succeeded" in {e.reason for e in ev},
        "the sweep's Event Succeeded",
    )
    assert [e.reason for e in events].count("CreatedTrial") == 4, [e.reason for e in events]


def test_a_sweep_whose_trial_the_finetunejob_api_refuses_stalls_visibly(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    """The sweep's CRD admits any number as lora.r; the FineTuneJob model refuses 2048. Nothing is
    created, and the sweep says why: Stalled, and a Warning Event."""
    body = sweep_body("bad", s3_seeded)
    body["spec"]["parameters"] = [{"path": "lora.r", "values": [4, 2048]}]
    custom.create_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", body)

    def failed() -> dict[str, Any] | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", "bad")
        return obj if (obj.get("status") or {}).get("phase") == "Failed" else None

    status = wait_for(failed, 60, "the sweep to fail")["status"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "invalid trial bad-1" in status["message"] and "less than or equal to 1024" in status["message"]
    assert trials_of(custom, workspace, "bad") == [], "a trial was created for an invalid sweep"
    warnings = wait_for(
        lambda: [e for e in events_for(core, workspace, "bad") if e.type == "Warning"], 30, "a Warning Event"
    )
    assert warnings[0].reason == "InvalidSpec" and "invalid trial bad-1" in warnings[0].message


def test_early_stopping_suspends_a_trial_that_cannot_beat_the_best(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    """One trial at a time. Trial 0 trains 8 steps; trial 1 is the same run at 40 steps, evaluated every
    2: once past 10% of its steps, its live evalLoss (after 4-6 steps) is still above trial 0's final
    one, so the sweep suspends it and records it EarlyStopped, while trial 0 is the best."""
    body = sweep_body("early", s3_seeded)
    template = body["spec"]["template"]["spec"]
    template["training"] = {**template["training"], "learningRate": 0.001, "evalSteps": 2}
    template["export"] = {"enabled": False}  # the metric is the trainer's: no export Job to wait for
    body["spec"].update(
        parallelism=1,
        parameters=[{"path": "training.maxSteps", "values": [8, 40]}],
        earlyStopping={"minProgressPercent": 10},
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", body)

    def finished() -> dict[str, Any] | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", "early")
        return obj if (obj.get("status") or {}).get("phase") in FINISHED else None

    status = wait_for(finished, 600, "the sweep to finish", interval=1)["status"]
    assert status["phase"] == "Succeeded", status
    phases = {t["name"]: t["phase"] for t in status["trials"]}
    assert phases == {"early-0": "Succeeded", "early-1": "EarlyStopped"}, status["trials"]
    assert (status["trialsSucceeded"], status["trialsEarlyStopped"]) == (1, 1)
    assert status["bestTrial"]["name"] == "early-0"

    # The stopped trial is suspended, marked, and stopped before its end, worse than the best.
    [stopped] = [t for t in trials_of(custom, workspace, "early") if t["metadata"]["name"] == "early-1"]
    assert stopped["spec"]["suspend"] is True
    assert "kubetune.dev/early-stopped" in stopped["metadata"]["annotations"]
    progress = stopped["status"]["progress"]
    assert 10 <= progress["progressPercentage"] < 100, progress
    # The Event says what it was judged on: the live metric then, against the best final one.
    events = events_once(
        core,
        workspace,
        "early",
        lambda ev: any(e.reason == "EarlyStopped" for e in ev),
        "an Event EarlyStopped",
    )
    [stop] = [e for e in events if e.reason == "EarlyStopped"]
    assert stop.message.startswith("early-1: evalLoss ") and "cannot beat early-0's" in stop.message
    live = float(stop.message.split()[2])
    assert live > status["bestTrial"]["metric"], (stop.message, status["bestTrial"])


def test_a_trial_name_held_by_another_finetunejob_stalls_the_sweep_visibly(
    operator_release: str,
    workspace: str,
    s3_seeded: dict[str, str],
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    """A FineTuneJob the sweep does not own already holds `taken-0`: the sweep never adopts it and
    never waits for it silently; it fails with the name and what to do, and a Warning Event."""
    squatter = tiny_job("taken-0", s3_seeded, suspend=True)  # suspended: it runs no pod
    custom.create_namespaced_custom_object(GROUP, VERSION, workspace, "finetunejobs", squatter)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, workspace, "finetunesweeps", sweep_body("taken", s3_seeded)
    )

    def failed() -> dict[str, Any] | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, workspace, "finetunesweeps", "taken")
        return obj if (obj.get("status") or {}).get("phase") == "Failed" else None

    status = wait_for(failed, 60, "the sweep to fail")["status"]
    assert "FineTuneJob taken-0 already exists and is not a trial of this sweep" in status["message"]
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert "kubetune.dev/sweep" not in (
        custom.get_namespaced_custom_object(GROUP, VERSION, workspace, "finetunejobs", "taken-0")[
            "metadata"
        ].get("labels")
        or {}
    )
    warnings = wait_for(
        lambda: [e for e in events_for(core, workspace, "taken") if e.type == "Warning"],
        30,
        "a Warning Event",
    )
    assert "taken-0 already exists" in warnings[0].message

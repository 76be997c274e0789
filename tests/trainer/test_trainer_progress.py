from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from kubetune_trainer.progress import JsonFileSink, KubernetesStatusSink, ProgressCallback, status_patch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingApi:
    """Stands in for kubernetes.client.CustomObjectsApi; records each status patch."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))
        if self.fail:
            raise RuntimeError("apiserver unavailable")


def test_status_patch_body() -> None:
    assert status_patch({"step": 1}) == {"status": {"progress": {"step": 1, "metrics": {}}}}
    # Live evaluation metrics are the trainer's (progress.metrics); status.metrics is the operator's.
    assert status_patch(None, {"evalLoss": 0.1, "trainLoss": 2.0}) == {
        "status": {"progress": {"metrics": {"evalLoss": 0.1}}}
    }
    checkpoint = {"step": 5, "uri": "s3://b/c/checkpoint-5", "time": "2026-01-01T00:00:00Z"}
    assert status_patch(None, checkpoint=checkpoint)["status"]["lastCheckpoint"]["step"] == 5


def test_kubernetes_sink_throttles_and_always_sends_the_end() -> None:
    clock, api = FakeClock(), RecordingApi()
    sink = KubernetesStatusSink("job", "ns", min_interval=10, api=api, clock=clock)
    sink.progress({"step": 1})  # first: sent
    clock.now += 3
    sink.progress({"step": 2})  # throttled
    clock.now += 3
    sink.progress({"step": 3})  # throttled
    assert len(api.calls) == 1
    clock.now += 5
    sink.progress({"step": 4})  # 11 s after the first: sent
    sink.progress({"step": 5}, final=True)  # final: sent despite the throttle
    sink.progress({"step": 6})  # throttled, kept pending
    sink.metrics({"evalLoss": 0.25, "trainLoss": 0.5})  # carries the pending progress with the metrics
    bodies = [args[5] for args, _ in api.calls]
    assert [b["status"].get("progress", {}).get("step") for b in bodies] == [1, 4, 5, 6]
    # The live evaluation metrics, in progress.metrics; status.metrics is the operator's to write.
    assert bodies[-1]["status"]["progress"]["metrics"] == {"evalLoss": 0.25}
    assert "metrics" not in bodies[-1]["status"]
    args, kwargs = api.calls[0]
    assert args[:5] == ("kubetune.dev", "v1alpha1", "ns", "finetunejobs", "job")
    assert kwargs["_content_type"] == "application/merge-patch+json"


def test_kubernetes_sink_failures_are_not_fatal() -> None:
    api = RecordingApi(fail=True)
    sink = KubernetesStatusSink("job", "ns", min_interval=0, api=api)
    sink.progress({"step": 1})
    sink.metrics({"x": 1})
    assert len(api.calls) == 2


def test_kubernetes_sink_from_env(monkeypatch) -> None:
    monkeypatch.delenv("KUBETUNE_JOB_NAME", raising=False)
    assert KubernetesStatusSink.from_env() is None
    monkeypatch.setenv("KUBETUNE_JOB_NAME", "tone")
    monkeypatch.setenv("KUBETUNE_JOB_NAMESPACE", "team-a")
    monkeypatch.setenv("KUBETUNE_PROGRESS_INTERVAL", "2.5")
    sink = KubernetesStatusSink.from_env()
    assert sink is not None and (sink.name, sink.namespace, sink.min_interval) == ("tone", "team-a", 2.5)


def test_callback_reports_eta_rate_and_losses(tmp_path: Path) -> None:
    clock, sink = FakeClock(), JsonFileSink(tmp_path / "p.jsonl")
    callback = ProgressCallback(sink, clock=clock)
    state = SimpleNamespace(global_step=0, max_steps=10, epoch=0.0, num_input_tokens_seen=0)
    callback.on_train_begin(None, state, None)
    clock.now += 4
    state.global_step, state.epoch, state.num_input_tokens_seen = 2, 0.2, 400
    callback.on_log(None, state, None, logs={"loss": 2.5, "learning_rate": 1e-3})
    event = sink.read()[-1]
    assert event["step"] == 2 and event["totalSteps"] == 10 and event["progressPercentage"] == 20
    assert event["estimatedRemainingSeconds"] == 16 and event["tokensPerSecond"] == 100.0
    assert event["loss"] == 2.5 and event["learningRate"] == 1e-3 and event["phase"] == "training"
    callback.on_train_end(None, state, None)
    assert sink.read()[-1]["phase"] == "trained" and sink.read()[-1]["final"]

"""observation.observe(): a FineTuneJob's child Jobs and pods, from the indexes, reduced to facts."""

from __future__ import annotations

from child_cases import T_RUNNING, job, observed, pod
from operator_cases import tiny

from kubetune_operator.observation import Children, observe


def test_pods_belong_to_the_job_their_job_name_label_names() -> None:
    ftj = tiny()
    trainer_job, _ = T_RUNNING
    exporter_job = job("exporter", active=1)
    pods = [pod("trainer", "tiny-train-a", 1, "Error", "boom"), pod("exporter", "tiny-export-a", 6, "Error")]
    seen = observe(ftj, Children(jobs=[trainer_job, exporter_job], pods=pods))
    assert seen.trainer is not None and seen.exporter is not None
    assert [o.pod for o in seen.trainer.outcomes] == ["tiny-train-a"]
    assert [o.pod for o in seen.exporter.outcomes] == ["tiny-export-a"]


def test_no_jobs_no_children() -> None:
    seen = observe(tiny(), Children(pods=[pod("trainer", "tiny-train-a", 1)]))
    assert (seen.trainer, seen.exporter) == (None, None)


def test_the_disruption_target_condition_is_observed() -> None:
    ftj = tiny()
    evicted = pod("trainer", "tiny-train-a", 143, "Error", disruption="EvictionByEvictionAPI")
    seen = observed(ftj, (T_RUNNING[0], [evicted]), None)
    assert seen.trainer is not None
    assert [o.disruption for o in seen.trainer.outcomes] == ["EvictionByEvictionAPI"]
    plain = observed(ftj, (T_RUNNING[0], [pod("trainer", "tiny-train-b", 1)]), None)
    assert plain.trainer is not None and plain.trainer.outcomes[0].disruption == ""

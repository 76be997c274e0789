"""Pure builders of a FineTuneSweep: its trial list from the search space, and each trial's FineTuneJob.

Trials are numbered from 0 in a fixed order (grid: the product of the parameters' values, the last
parameter varying fastest; random: `maxTrials` draws of a generator seeded with `spec.seed`), so the
same spec always gives the same trials under the same names, `<sweep>-<index>`.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any

from kubetune_api import API_VERSION, KIND, FineTuneJob
from kubetune_api.sweep import INTEGER_PATHS, SWEEP_KIND, FineTuneSweep, SearchParameter

SWEEP_LABEL = "kubetune.dev/sweep"
TRIAL_INDEX_LABEL = "kubetune.dev/sweep-trial"
PARAMETERS_ANNOTATION = "kubetune.dev/sweep-parameters"
# Set, with spec.suspend, on a trial the sweep stopped early: its phase is read back from the trial.
EARLY_STOPPED_ANNOTATION = "kubetune.dev/early-stopped"
# Random draws are rounded to this many significant digits, so specs and status read well.
SIGNIFICANT_DIGITS = 6


@dataclass(frozen=True)
class Trial:
    index: int
    name: str
    parameters: dict[str, float]


def trial_name(sweep: FineTuneSweep, index: int) -> str:
    return f"{sweep.metadata.name}-{index}"


def trials(sweep: FineTuneSweep) -> list[Trial]:
    """Every trial of the sweep, in index order."""
    spec = sweep.spec
    if spec.algorithm == "grid":
        combos = itertools.product(*[[_value(p, v) for v in p.values or ()] for p in spec.parameters])
        chosen = list(itertools.islice(combos, spec.max_trials))
    else:
        rng = random.Random(spec.seed)
        chosen = [tuple(_draw(p, rng) for p in spec.parameters) for _ in range(spec.max_trials or 0)]
    paths = [p.path.value for p in spec.parameters]
    return [
        Trial(i, trial_name(sweep, i), dict(zip(paths, combo, strict=True))) for i, combo in enumerate(chosen)
    ]


def _value(p: SearchParameter, value: float) -> float:
    return float(round(value)) if p.path in INTEGER_PATHS else value


def _draw(p: SearchParameter, rng: random.Random) -> float:
    if p.values is not None:
        return _value(p, rng.choice(p.values))
    low, high = float(p.min or 0.0), float(p.max or 0.0)
    if p.scale == "log":
        drawn = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        drawn = rng.uniform(low, high)
    if p.path in INTEGER_PATHS:
        return float(min(max(round(drawn), math.ceil(low)), math.floor(high)))
    return float(f"{drawn:.{SIGNIFICANT_DIGITS}g}")


def wire_values(trial: Trial) -> dict[str, int | float]:
    """The trial's values as the spec takes them: whole numbers for integer fields."""
    return {path: int(v) if path in INTEGER_PATHS else v for path, v in trial.parameters.items()}


def trial_spec(sweep: FineTuneSweep, trial: Trial) -> dict[str, Any]:
    """The template's spec with the trial's values set, as the API server stores it."""
    spec = sweep.spec.template.spec.to_k8s()
    for path, value in wire_values(trial).items():
        section, field = path.split(".")
        spec.setdefault(section, {})[field] = value
    return spec


def trial_job(sweep: FineTuneSweep, trial: Trial) -> dict[str, Any]:
    """The trial's FineTuneJob: the template's labels (Kueue's queue label passes through) and
    annotations, the sweep's labels, and the sweep as its controlling owner."""
    template = sweep.spec.template.metadata
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": trial.name,
            "namespace": sweep.metadata.namespace,
            "labels": {
                **template.labels,
                SWEEP_LABEL: str(sweep.metadata.name),
                TRIAL_INDEX_LABEL: str(trial.index),
            },
            "annotations": {
                **template.annotations,
                PARAMETERS_ANNOTATION: json.dumps(wire_values(trial), sort_keys=True),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": SWEEP_KIND,
                    "name": str(sweep.metadata.name),
                    "uid": str(sweep.metadata.uid),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": trial_spec(sweep, trial),
    }


def validated_trial_job(sweep: FineTuneSweep, trial: Trial) -> dict[str, Any]:
    """trial_job, checked by the FineTuneJob model; raises pydantic.ValidationError for a trial the
    FineTuneJob API would refuse (e.g. lora.r beyond its bound)."""
    body = trial_job(sweep, trial)
    FineTuneJob.from_k8s(body)
    return body


def stop_patch(reason: str) -> dict[str, Any]:
    """The merge patch that stops a trial early: suspended, and marked as stopped by the sweep."""
    return {"metadata": {"annotations": {EARLY_STOPPED_ANNOTATION: reason}}, "spec": {"suspend": True}}

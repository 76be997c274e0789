"""The train/eval split, and seeded samples of held-out rows."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kubetune_api.v1alpha1 import DatasetSpec
from kubetune_trainer.data.types import Row
from kubetune_trainer.errors import data_error

if TYPE_CHECKING:
    pass

log = logging.getLogger("kubetune_trainer.data")


@dataclass(frozen=True)
class Splits:
    train: list[Row]
    eval: list[Row]


def split_rows(spec: DatasetSpec, train_rows: list[Row], eval_rows: list[Row] | None) -> Splits:
    """Shuffle with the dataset seed, hold out evalRatio when no eval file is given, cap maxSamples."""
    rng = random.Random(spec.seed)
    train = list(train_rows)
    rng.shuffle(train)
    if eval_rows is None:
        # Without evalRatio (and without an eval file) no row is held out, as the API documents.
        ratio = spec.eval_ratio or 0.0
        n_eval = round(len(train) * ratio)
        if ratio > 0 and n_eval == 0 and len(train) > 1:
            n_eval = 1
        eval_rows, train = train[:n_eval], train[n_eval:]
    if spec.max_samples is not None:
        train = train[: spec.max_samples]
    if not train:
        raise data_error("no training rows left after the eval split")
    return Splits(train=train, eval=list(eval_rows))


def sample_rows(rows: list[Row], n: int, seed: int) -> list[Row]:
    """At most n rows drawn with the dataset seed, in their file order; all of them when fewer. The
    first n rows of a file are often no fair sample (files are sorted by label more often than not)."""
    if len(rows) <= n:
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in picked]

"""Evaluation beyond the loss: perplexity, and task metrics on greedy answers to held-out rows.

- exactMatch: the share of answers equal to the gold answer (case and surrounding space ignored);
- f1: macro F1 over the gold labels, for label-style answers (scikit-learn);
- rougeL: ROUGE-L F-measure for free-text answers (Google's rouge-score, offline).

The HF Trainer logs them as eval_<name> next to eval_loss, so they reach TensorBoard, the progress
callback and early stopping like any other evaluation metric.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from kubetune_api.v1alpha1 import EvaluationSpec, TaskMetric, WatchedMetric
from kubetune_trainer.generation import Prompt, answer_text, encode, torch_greedy

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The HF Trainer's key (without the eval_ prefix) for each metric named in the spec.
TRAINER_KEYS: Final[dict[WatchedMetric, str]] = {
    "evalLoss": "loss",
    "perplexity": "perplexity",
    "exactMatch": "exact_match",
    "f1": "f1",
    "rougeL": "rouge_l",
}
# status.metrics names of the evaluation keys (eval_<key> -> camelCase).
STATUS_NAMES: Final[dict[str, str]] = {
    "eval_loss": "evalLoss",
    "eval_perplexity": "evalPerplexity",
    "eval_exact_match": "evalExactMatch",
    "eval_f1": "evalF1",
    "eval_rouge_l": "evalRougeL",
}


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def exact_match(predictions: list[str], golds: list[str]) -> float:
    if not golds:
        return 0.0
    return sum(normalize(p) == normalize(g) for p, g in zip(predictions, golds, strict=True)) / len(golds)


def macro_f1(predictions: list[str], golds: list[str]) -> float:
    """F1 averaged over the gold labels; an answer outside them counts as wrong for its row's label."""
    from sklearn.metrics import f1_score

    if not golds:
        return 0.0
    gold = [normalize(g) for g in golds]
    predicted = [normalize(p) for p in predictions]
    return float(f1_score(gold, predicted, labels=sorted(set(gold)), average="macro", zero_division=0))


def rouge_l(predictions: list[str], golds: list[str]) -> float:
    from rouge_score import rouge_scorer

    if not golds:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(g, p)["rougeL"].fmeasure for p, g in zip(predictions, golds, strict=True)]
    return sum(scores) / len(scores)


SCORERS: Final = {"exactMatch": exact_match, "f1": macro_f1, "rougeL": rouge_l}


def task_scores(metrics: list[TaskMetric], predictions: list[str], golds: list[str]) -> dict[str, float]:
    """Trainer-keyed scores (exact_match, f1, rouge_l) of the chosen metrics."""
    return {TRAINER_KEYS[m]: SCORERS[m](predictions, golds) for m in metrics}


def perplexity(loss: float) -> float:
    # exp overflows past ~709; a loss that high means the model is useless anyway.
    return math.exp(min(loss, 50.0))


class AnswerEvaluator:
    """Answers the same held-out prompts greedily at every evaluation and scores them."""

    def __init__(self, spec: EvaluationSpec, tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt]):
        self.spec, self.tokenizer = spec, tokenizer
        self.prompts = prompts[: spec.samples]
        self.prompt_ids = [encode(tokenizer, p.text) for p in self.prompts]
        self.last_answers: list[str] = []

    def __call__(self, model: Any) -> dict[str, float]:
        if not self.spec.metrics or not self.prompts:
            return {}
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # Training may run without the KV cache (packing); generation is much faster with it.
        use_cache = getattr(base.config, "use_cache", False)
        base.config.use_cache = True
        try:
            new_tokens = torch_greedy(model, self.tokenizer, self.prompt_ids, self.spec.max_new_tokens)
        finally:
            base.config.use_cache = use_cache
        self.last_answers = [answer_text(self.tokenizer, t) for t in new_tokens]
        return task_scores(self.spec.metrics, self.last_answers, [p.answer for p in self.prompts])


def status_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """The evaluation entries of a Trainer log, under their status.metrics names."""
    return {STATUS_NAMES[k]: float(v) for k, v in logs.items() if k in STATUS_NAMES and v is not None}

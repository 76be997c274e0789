"""Dry run entrypoint (spec.dryRun): python -m kubetune_trainer.plan --config input.json

Reads the data with the trainer's own readers, formats and encoders, and the base model's config and
tokenizer (plan_model.py: no weights, the module tree on the meta device), and reports what training
would see: rendered examples, token lengths, label coverage, the LoRA targets, parameter counts,
estimated peak memory (memory_estimate.py) and steps. What would make training fail is an error
problem, what would make it train differently than meant a warning. The pod exits 0 with the plan as
its result document ({"plan": ...}, at most 4 KiB) whenever it could plan; it fails with the trainer's
exit codes when it cannot read the data or the model at all.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubetune_api import (
    FineTuneJobSpec,
    LabelCoverage,
    PlanProblem,
    PlanSeverity,
    PlanStatus,
    TokenStats,
    TrainerInput,
)
from kubetune_api.plan import EXAMPLE_CHARS, MAX_EXAMPLES
from kubetune_api.v1alpha1 import template_fields
from kubetune_trainer import plan_model
from kubetune_trainer.cli import configure_logging, load_input, parse_args, run_entrypoint
from kubetune_trainer.data import (
    IGNORE,
    Format,
    Row,
    chat_messages,
    chat_template_of,
    encode_each,
    read_rows,
    render,
    resolve_format,
    sample_rows,
    split_rows,
    validate_rows,
)
from kubetune_trainer.errors import TrainerError
from kubetune_trainer.result import RESULT_LIMIT
from kubetune_trainer.storage import Storage

log = logging.getLogger("kubetune_trainer.plan")

# Rows whose tokens are measured: a seeded sample of larger datasets.
MEASURED_ROWS = 5000
# Long enough that no row is cut: the untruncated lengths.
UNLIMITED = 1 << 30
ERROR, WARNING = PlanSeverity.ERROR, PlanSeverity.WARNING


@dataclass
class DataFacts:
    format: Format | None
    rows: list[Row]  # training rows that training would accept, in file order
    train_rows: int  # after the eval split and maxSamples
    problems: list[PlanProblem] = field(default_factory=list)


def _problem(reason: str, message: str, severity: PlanSeverity = ERROR) -> PlanProblem:
    return PlanProblem(reason=reason, message=message[:1024], severity=severity)


def _missing_fields(names: list[str], rows: list[Row], what: str) -> list[PlanProblem]:
    """MissingField for each named field that rows lack (or hold null): training fails on the first."""
    problems = []
    for name in names:
        lacking = [i for i, row in enumerate(rows, 1) if row.get(name) is None]
        if lacking:
            first = rows[lacking[0] - 1]
            problems.append(
                _problem(
                    "MissingField",
                    f"{what} names field {name!r}, which {len(lacking)} of {len(rows)} rows lack or hold "
                    f"null (row {lacking[0]} has: {', '.join(sorted(first)) or 'no fields'})",
                )
            )
    return problems


def check_rows(
    spec: FineTuneJobSpec, rows: list[Row], source: str
) -> tuple[Format | None, list[Row], list[PlanProblem]]:
    """The format, the rows training would accept, and what is wrong with the others."""
    dataset = spec.dataset
    try:
        fmt = resolve_format(dataset, rows, source)
    except TrainerError as exc:
        return None, [], [_problem("InvalidData", exc.message)]
    problems: list[PlanProblem] = []
    if fmt == "text":
        assert dataset.template is not None
        names = template_fields(dataset.template)
        what = "dataset.textTemplate" if dataset.text_template else "format text"
        problems = _missing_fields(names, rows, what)
        good = [r for r in rows if all(r.get(n) is not None for n in names)]
    elif fmt == "promptCompletion":
        problems = _missing_fields(["prompt", "completion"], rows, "format promptCompletion")
        good = [r for r in rows if r.get("prompt") is not None and r.get("completion") is not None]
    else:
        no_turns = [
            i
            for i, r in enumerate(rows, 1)
            if isinstance(r.get("messages"), list)
            and not any(isinstance(m, dict) and m.get("role") == "assistant" for m in r["messages"])
        ]
        if no_turns:
            problems.append(
                _problem(
                    "NoAssistantTurns",
                    f"{len(no_turns)} of {len(rows)} chat rows have no assistant turn to learn from "
                    f"(first: row {no_turns[0]}); training fails on them",
                )
            )
        good = [r for i, r in enumerate(rows, 1) if i not in set(no_turns)]
    if not problems:
        try:
            validate_rows(dataset, fmt, rows, source)
        except TrainerError as exc:
            problems.append(_problem("InvalidData", exc.message))
    if fmt == "chat":
        good = [r for i, r in enumerate(good, 1) if _valid_chat(r, i)]
    return fmt, good, problems


def _valid_chat(row: Row, number: int) -> bool:
    try:
        chat_messages(row, number)
    except TrainerError:
        return False
    return True


def read_data(spec: FineTuneJobSpec, storage: Storage, workdir: Path) -> DataFacts:
    dataset = spec.dataset
    train_path = storage.download(dataset.train_uri, workdir / "data" / "train")
    rows = read_rows(train_path)
    fmt, good, problems = check_rows(spec, rows, train_path.name)
    eval_rows = None
    if dataset.eval_uri:
        eval_path = storage.download(dataset.eval_uri, workdir / "data" / "eval")
        eval_rows = read_rows(eval_path)
        if fmt is not None:
            eval_problems = check_rows(spec, eval_rows, eval_path.name)[2]
            problems += [p.model_copy(update={"message": f"eval data: {p.message}"}) for p in eval_problems]
    train_rows = 0
    if good:
        try:
            train_rows = len(split_rows(dataset, good, eval_rows).train)
        except TrainerError as exc:
            problems.append(_problem("InvalidData", exc.message))
    return DataFacts(fmt, good, train_rows, problems)


@dataclass
class TokenFacts:
    stats: TokenStats | None
    labels: LabelCoverage | None
    problems: list[PlanProblem]


def _percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1)]


def measure_tokens(spec: FineTuneJobSpec, data: DataFacts, tokenizer: Any) -> TokenFacts:
    """Lengths before truncation, and the labels training keeps within maxSeqLength."""
    max_len = spec.training.max_seq_length
    if data.format is None or not data.rows:
        return TokenFacts(None, None, [])
    rows = sample_rows(data.rows, MEASURED_ROWS, spec.dataset.seed)
    try:
        full = encode_each(spec.dataset, data.format, rows, tokenizer, UNLIMITED)
        cut = encode_each(spec.dataset, data.format, rows, tokenizer, max_len)
    except TrainerError as exc:
        return TokenFacts(None, None, [_problem("InvalidData", exc.message)])
    lengths = sorted(len(e["input_ids"]) for e in full)
    truncated = sum(1 for e in full if len(e["input_ids"]) > max_len)
    stats = TokenStats(
        rows_measured=len(rows),
        min=lengths[0],
        mean=round(statistics.fmean(lengths), 1),
        p50=_percentile(lengths, 0.5),
        p95=_percentile(lengths, 0.95),
        max=lengths[-1],
        truncated_rows=truncated,
        max_seq_length=max_len,
    )
    problems = []
    if truncated == len(rows):
        problems.append(
            _problem(
                "AllRowsTruncated",
                f"every measured row is longer than training.maxSeqLength {max_len} (shortest {lengths[0]} "
                f"tokens, median {stats.p50}): raise maxSeqLength to at least {stats.p95}",
            )
        )
    elif truncated:
        problems.append(
            _problem(
                "SomeRowsTruncated",
                f"{truncated} of {len(rows)} rows are longer than training.maxSeqLength {max_len} and are "
                f"cut at training (longest {lengths[-1]} tokens, p95 {stats.p95})",
                WARNING,
            )
        )
    labels, label_problems = label_coverage(data.format, full, cut, max_len)
    return TokenFacts(stats, labels, problems + label_problems)


def label_coverage(
    fmt: Format, full: list[dict[str, list[int]]], cut: list[dict[str, list[int]]], max_len: int
) -> tuple[LabelCoverage, list[PlanProblem]]:
    if fmt == "text":
        return LabelCoverage(scope="all", labeled_share=1.0, rows_without_labels=0), []
    scope = "completion" if fmt == "promptCompletion" else "assistant"
    tokens = labeled = without = 0
    for whole, example in zip(full, cut, strict=True):
        n = sum(1 for label in example["labels"] if label != IGNORE)
        if fmt == "promptCompletion" and len(whole["input_ids"]) > max_len:
            n -= 1  # the EOS appended to a cut example is learned, but no completion token is
        tokens += len(example["input_ids"])
        labeled += max(n, 0)
        without += n <= 0
    coverage = LabelCoverage(
        scope=scope,  # type: ignore[arg-type]
        labeled_share=round(labeled / tokens, 4) if tokens else 0.0,
        rows_without_labels=without,
    )
    part = "completion" if scope == "completion" else "assistant"
    if without == len(cut):
        message = (
            f"no row has a {part} token within training.maxSeqLength {max_len}: nothing would be learned"
        )
        return coverage, [_problem("NoLabels", message)]
    if without:
        message = (
            f"{without} of {len(cut)} rows have no {part} token within training.maxSeqLength {max_len} "
            "and teach nothing" + ("; training skips them" if fmt == "chat" else "")
        )
        return coverage, [_problem("RowsWithoutLabels", message, WARNING)]
    return coverage, []


def examples(spec: FineTuneJobSpec, fmt: Format | None, rows: list[Row], tokenizer: Any) -> list[str]:
    """The first rows as the trainer renders them, cut to EXAMPLE_CHARS."""
    out = []
    for number, row in enumerate(rows[:MAX_EXAMPLES], 1):
        try:
            if fmt == "text":
                assert spec.dataset.template is not None
                text = render(spec.dataset.template, row, number)
            elif fmt == "promptCompletion":
                text = f"{row['prompt']}{row['completion']}"
            else:
                chat_template_of(tokenizer)
                messages = chat_messages(row, number)
                text = str(tokenizer.apply_chat_template(messages, tokenize=False))
        except TrainerError:
            continue
        out.append(text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…")
    return out


def steps(spec: FineTuneJobSpec, train_rows: int) -> tuple[int, int]:
    """(per epoch, in all), as the HF Trainer counts them: batches over every device, accumulated."""
    training, resources = spec.training, spec.resources
    world = max(resources.gpus_per_node, 1) * resources.nodes
    batches = math.ceil(train_rows / (training.batch_size * world))
    per_epoch = max(batches // training.gradient_accumulation_steps, 1) if train_rows else 0
    total = training.max_steps or math.ceil((training.length_epochs or 1.0) * per_epoch)
    return per_epoch, total


def plan(job: TrainerInput, workdir: Path, storage: Storage | None = None) -> PlanStatus:
    storage = storage or Storage()
    spec = job.spec
    data = read_data(spec, storage, workdir)
    config, tokenizer, base_format = plan_model.fetch_config_and_tokenizer(spec.base_model, storage, workdir)
    facts = plan_model.model_facts(config, tokenizer, base_format)
    tokens = measure_tokens(spec, data, tokenizer)
    problems = data.problems + tokens.problems
    targets: list[str] = []
    if spec.lora is not None:
        targets, target_problems = plan_model.resolve_targets(spec.lora, facts)
        problems += target_problems
    if tokens.stats is not None:
        longest = spec.training.max_seq_length if spec.training.packing else tokens.stats.max
        seq_length = min(longest, spec.training.max_seq_length)
    else:
        seq_length = spec.training.max_seq_length
    share = tokens.labels.labeled_share if tokens.labels is not None else 1.0
    per_epoch, total = steps(spec, data.train_rows)
    return PlanStatus(
        format=data.format,
        base_format=base_format,
        rows=data.train_rows,
        examples=examples(spec, data.format, data.rows, tokenizer),
        tokens=tokens.stats,
        labels=tokens.labels,
        linear_modules=sorted(facts.linear_modules),
        target_modules=targets,
        trainable_parameters=plan_model.trainable_parameters(spec, targets, facts),
        total_parameters=facts.shape.total_parameters,
        memory=plan_model.memory_table(spec, targets, facts, seq_length, share),
        steps_per_epoch=per_epoch,
        total_steps=total,
        problems=problems,
    )


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def render_plan(plan: PlanStatus) -> str:
    """{"plan": ...} in at most RESULT_LIMIT bytes. When the whole does not fit, the examples are cut
    shorter, then dropped, then the memory table beyond the spec's own entry, then the module list;
    `truncated` names what went. Problems are never dropped (their messages are cut to fit)."""
    body = plan.to_k8s()
    dropped: list[str] = []

    def fits() -> bool:
        body["truncated"] = list(dropped)
        return len(_dump({"plan": body}).encode()) <= RESULT_LIMIT

    steps_to_fit: tuple[tuple[str, Callable[[], list[Any]]], ...] = (
        ("examples", lambda: [e[:80] for e in body.get("examples", [])]),
        ("examples", lambda: body.get("examples", [])[:1]),
        ("examples", lambda: []),
        ("memory", lambda: body.get("memory", [])[:1]),
        ("linearModules", lambda: []),
        ("problems", lambda: [dict(p, message=p["message"][:160]) for p in body.get("problems", [])]),
    )
    for key, shrink in steps_to_fit:
        if not body.get(key) or fits():
            continue
        body[key] = shrink()
        if key not in dropped:
            dropped.append(key)
    if not fits():
        raise ValueError(f"the plan does not fit {RESULT_LIMIT} bytes: {_dump({'plan': body})[:200]}")
    if not dropped:
        body.pop("truncated", None)
    return _dump({"plan": body})


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = parse_args("python -m kubetune_trainer.plan", argv)

    def job() -> str:
        run_input = load_input(args.config)
        found = plan(run_input, args.workdir)
        for problem in found.problems:
            log.warning("%s %s: %s", problem.severity, problem.reason, problem.message)
        return render_plan(found)

    return run_entrypoint("plan", job)


if __name__ == "__main__":
    sys.exit(main())

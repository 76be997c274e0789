"""The HF Trainer with what Kubetune adds to it: real-token counts of packed batches, attention per
example for one-row batches (per_example_attention) and their examples' shared prefix computed once in
training (shared_prefix), the LM head only at labeled positions in training
(labeled_head) and fused with its loss (fused_head_loss), LoRA dropout masks drawn faster on the CPU
(fast_dropout), frozen weights on huge pages on the CPU (huge_pages), and perplexity and task metrics
in every evaluation."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from transformers import Trainer

from kubetune_trainer import distributed
from kubetune_trainer import fast_dropout as fast_dropout_module
from kubetune_trainer import huge_pages as huge_pages_module
from kubetune_trainer import shared_prefix as shared_prefix_module
from kubetune_trainer.data import EXAMPLE_LENGTHS, REAL_TOKENS, SHARED_PREFIX
from kubetune_trainer.evaluation import AnswerEvaluator, perplexity
from kubetune_trainer.labeled_head import LabeledPositionsHead, predictions
from kubetune_trainer.per_example_attention import attending


class KubetuneTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        answer_evaluator: AnswerEvaluator | None = None,
        labeled_positions_only: bool = True,
        fused_head_loss: bool = True,
        fast_dropout: bool = True,
        huge_pages: bool = True,
        shared_prefix: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.answer_evaluator = answer_evaluator
        # Needs the labeled-positions head: a shared position predicts once per example.
        self.shared_prefix = shared_prefix
        if fast_dropout:
            fast_dropout_module.install(self.model)
        if huge_pages:
            huge_pages_module.move_frozen_weights(self.model)
        head = LabeledPositionsHead(self.model, fused_head_loss) if labeled_positions_only else None
        self.labeled_head = head if head is not None and head.supported else None

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        # A one-row batch of examples (PackingCollator.per_example_rows): each is attended on its own.
        lengths = inputs.pop(EXAMPLE_LENGTHS, None)
        prefix = int(inputs.pop(SHARED_PREFIX, 0))
        per_example = attending(self.model, lengths.tolist()) if lengths is not None else nullcontext()
        head = self.labeled_head
        if head is None or not model.training or "labels" not in inputs or self.label_smoother is not None:
            with per_example:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        if lengths is not None and prefix and self.shared_prefix:
            # The examples' shared prefix once (its predictions gathered once per example).
            shared = shared_prefix_module.layout(inputs["input_ids"], labels, lengths, prefix)
            inputs["input_ids"], inputs["position_ids"] = shared.input_ids, shared.position_ids
            sources, targets = shared.sources, shared.targets
            per_example = attending(self.model, shared.own_lengths, prefix)
        else:
            sources, targets = predictions(labels)
        with head.selecting(sources), per_example:
            outputs = model(**inputs)
        # With the fused loss, outputs.logits holds the selected hidden states, not logits.
        loss = head.loss(outputs.logits, targets, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # As the base class: the count spans every rank, and DDP averages the gradients.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # Packed batches carry their real token count (padded row tails excluded); keep it from the model.
        real = inputs.pop(REAL_TOKENS, None)
        if real is not None and self.model is not None and self.model.training:
            self.state.num_input_tokens_seen += int(real)
        return super()._prepare_inputs(inputs)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        # Added here rather than in evaluate(): metrics added to this output are logged (TensorBoard,
        # status) and seen by early stopping like eval_loss.
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        metrics: dict[str, float] = output.metrics if output.metrics is not None else {}
        loss = metrics.get(f"{prefix}_loss")
        if loss is not None:
            metrics[f"{prefix}_perplexity"] = perplexity(float(loss))
        if self.answer_evaluator is not None:
            # Rank 0 answers and scores; every rank takes its scores, so that early stopping and the
            # best checkpoint are decided alike everywhere (and the generation runs once).
            scores = self.answer_evaluator(self.model) if distributed.is_main() else None
            scores = distributed.from_main(scores)
            metrics.update({f"{prefix}_{name}": value for name, value in scores.items()})
        return output

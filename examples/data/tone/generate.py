"""Write the phrase→tone demo dataset: train.jsonl (~240 rows) and eval.jsonl (40 held-out rows).

    python examples/data/tone/generate.py [--out DIR]

Deterministic: the same phrases and seed give byte-identical files. Train with the text template
"Phrase: {phrase}\\nTone: {tone}".
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from phrases import NEGATIVE, NEUTRAL, POSITIVE

TEMPLATE = "Phrase: {phrase}\nTone: {tone}"
SEED = 20261128
EVAL_PER_TONE = {"positive": 14, "negative": 13, "neutral": 13}


def build(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
    for tone, phrases in (("positive", POSITIVE), ("negative", NEGATIVE), ("neutral", NEUTRAL)):
        rows = [{"phrase": p, "tone": tone} for p in phrases]
        rng.shuffle(rows)
        # Held out per tone, so the eval set is balanced and no phrase appears in both files.
        n = EVAL_PER_TONE[tone]
        held_out += rows[:n]
        train += rows[n:]
    rng.shuffle(train)
    rng.shuffle(held_out)
    return train, held_out


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()
    train, held_out = build()
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, args.out / "train.jsonl")
    write_jsonl(held_out, args.out / "eval.jsonl")
    print(f"wrote {len(train)} train and {len(held_out)} eval rows to {args.out}")


if __name__ == "__main__":
    main()

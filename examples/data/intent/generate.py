"""Write the request→intent dataset, the second task of the export tests: train.jsonl (240 rows) and
eval.jsonl (36 held-out rows).

    python examples/data/intent/generate.py [--out DIR]

Six intents, each phrased by its own templates filled with slot values. The held-out rows use
templates and slot values that no training row uses, so the eval split measures generalisation, not
recall. Deterministic: the same seed gives byte-identical files. Train with the text template
"Request: {request}\\nIntent: {intent}".
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TEMPLATE = "Request: {request}\nIntent: {intent}"
SEED = 20261201
TRAIN_PER_INTENT = 40
EVAL_PER_INTENT = 6

# intent -> (training templates, held-out templates, slot values: training, held-out)
TIMES = (
    ["6 am", "seven tomorrow", "half past five", "9:15", "noon", "8 in the morning", "quarter to six"],
    ["5:40", "ten at night", "dawn"],
)
CITIES = (
    ["Paris", "Tokyo", "Lisbon", "Chicago", "Nairobi", "Oslo", "Lima", "Toronto"],
    ["Hanoi", "Dublin", "Perth"],
)
SONGS = (
    [
        "some jazz",
        "Bohemian Rhapsody",
        "the latest Adele album",
        "lo-fi beats",
        "Mozart",
        "my workout playlist",
        "classic rock",
    ],
    ["reggae", "the Beatles", "something calm"],
)
ITEMS = (
    ["milk", "eggs", "bread", "coffee beans", "dish soap", "apples", "rice", "batteries"],
    ["olive oil", "paper towels", "yogurt"],
)
PLACES = (
    [
        "the airport",
        "the nearest gas station",
        "downtown",
        "the train station",
        "Central Park",
        "the hospital",
        "my office",
    ],
    ["the museum", "the beach", "grandma's house"],
)
NAMES = (
    ["mom", "Alex", "the dentist", "my boss", "Sarah", "dad", "the plumber", "Priya"],
    ["Jonas", "my sister", "the landlord"],
)

INTENTS: dict[str, tuple[list[str], list[str], tuple[list[str], list[str]]]] = {
    "alarm": (
        [
            "wake me up at {x}",
            "set an alarm for {x}",
            "alarm at {x} please",
            "I need to get up at {x}",
            "can you set my alarm to {x}",
            "get me out of bed at {x}",
            "I have to be up by {x}",
            "buzz me at {x} in the morning",
        ],
        ["make sure I'm awake by {x}", "ring me at {x} to wake up"],
        TIMES,
    ),
    "weather": (
        [
            "what's the weather in {x}",
            "is it raining in {x}",
            "will it be sunny in {x} tomorrow",
            "forecast for {x}",
            "how cold is it in {x} today",
            "should I bring a jacket in {x}",
            "is it going to snow in {x}",
            "how hot will it get in {x}",
        ],
        ["do I need an umbrella in {x}", "temperature in {x} this weekend"],
        CITIES,
    ),
    "music": (
        [
            "play {x}",
            "put on {x}",
            "I want to hear {x}",
            "start playing {x}",
            "queue up {x}",
            "let's listen to {x}",
            "turn on {x} in the kitchen",
            "shuffle {x}",
        ],
        ["blast {x} in the living room", "can we listen to {x}"],
        SONGS,
    ),
    "shopping": (
        [
            "add {x} to my shopping list",
            "we're out of {x}",
            "put {x} on the grocery list",
            "remember to buy {x}",
            "I need to pick up {x}",
            "we need more {x} from the store",
            "grab {x} when you go shopping",
            "buy {x} this week",
        ],
        ["don't let me forget {x} at the store", "note {x} for the supermarket"],
        ITEMS,
    ),
    "directions": (
        [
            "how do I get to {x}",
            "navigate to {x}",
            "directions to {x}",
            "take me to {x}",
            "what's the fastest route to {x}",
            "show me the way to {x}",
            "how far is {x} by car",
            "route me to {x} avoiding tolls",
        ],
        ["which way is {x} from here", "guide me to {x}"],
        PLACES,
    ),
    "call": (
        [
            "call {x}",
            "phone {x}",
            "ring {x} for me",
            "dial {x}",
            "get {x} on the phone",
            "give {x} a call",
            "I need to speak with {x}",
            "connect me to {x}",
        ],
        ["I want to talk to {x} now", "start a call with {x}"],
        NAMES,
    ),
}


def build(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    held_out: list[dict[str, str]] = []
    for intent, (templates, eval_templates, (values, eval_values)) in INTENTS.items():
        pairs = sorted({(t, v) for t in templates for v in values})
        rng.shuffle(pairs)
        train += [{"request": t.format(x=v), "intent": intent} for t, v in pairs[:TRAIN_PER_INTENT]]
        pairs = sorted({(t, v) for t in eval_templates for v in eval_values})
        rng.shuffle(pairs)
        held_out += [{"request": t.format(x=v), "intent": intent} for t, v in pairs[:EVAL_PER_INTENT]]
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

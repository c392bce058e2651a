"""How plausible the local model's extracted values are, per shape of the extraction prompt.

    .venv/bin/python bench/extraction_accuracy.py                 # every shape, the whole set;
                                                                  # rewrites its section of
                                                                  # docs/PERFORMANCE.md
    .venv/bin/python bench/extraction_accuracy.py --shape plain --limit 6 --no-write

Runs the real local model (Gemma 3 270M) the way the engine's extraction does on it: one
``user`` message built by :func:`tokenwire.output.prompt.extraction_prompt`, temperature 0, the
schema's grammar, ``max_tokens`` 64; then parse and validate. (No re-ask: under the grammar the
output validated every time, and a re-ask would only hide a wrong value behind another try.)
The labelled set, bench/data/extraction_labelled.jsonl, holds short texts written for this,
each with the sentiment and the topic a reader would give it.

Another script may call :func:`accuracy` (sync) or :func:`measure` (async) for one shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import measure as bench_measure

from tokenwire.config import LocalProviderSettings
from tokenwire.output import check_schema, parse_and_repair, validate
from tokenwire.output.prompt import DEFAULT_SHAPE, PromptShape, extraction_prompt
from tokenwire.providers import GenerationRequest, Message, TextChunk
from tokenwire.providers.local import LocalProvider

DATA = Path(__file__).resolve().parent / "data" / "extraction_labelled.jsonl"
RESULTS = DATA.with_name("extraction_accuracy_results.json")
BEGIN, END = "<!-- extraction-accuracy:begin -->", "<!-- extraction-accuracy:end -->"
TOPICS = ["food", "travel", "technology", "health", "work", "shopping"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {
            "type": "string",
            "enum": ["positive", "negative", "neutral"],
            "description": "how the writer feels about what the text describes",
        },
        "topic": {
            "type": "string",
            "enum": TOPICS,
            "description": "what the text is about",
        },
    },
    "required": ["sentiment", "topic"],
    "additionalProperties": False,
}
SHAPES: dict[str, PromptShape] = {
    "plain": PromptShape(),
    "quoted": PromptShape(quoted=True),
    "descriptions": PromptShape(descriptions=True),
    "examples": PromptShape(examples=3),
    "descriptions+quoted": PromptShape(descriptions=True, quoted=True),
    "examples+quoted": PromptShape(examples=3, quoted=True),
    "all": PromptShape(examples=3, quoted=True, descriptions=True),
    "named": PromptShape(named_values=True),
    "named+quoted": PromptShape(named_values=True, quoted=True),
    "named+examples": PromptShape(named_values=True, examples=3),
    "named+descriptions": PromptShape(named_values=True, descriptions=True),
    "text-last": PromptShape(text_last=True),
    "text-last+quoted": PromptShape(text_last=True, quoted=True),
}
MAX_TOKENS = 64
FINDINGS = (
    "Before and after: the default was *plain* (the text, then the instruction); it is "
    "*text-last+quoted* since this comparison (the instruction, then the text as a JSON "
    "string right before `JSON:`), which raised the topic's accuracy from 42% to 78% "
    "(69% unquoted). This is the prompt of a `parallel` extraction; a `sequential` one on "
    "the local model continues the answer's transcript, instruction last, and is not "
    "measured here. The sentiment stays at chance in every shape: the model writes "
    "`positive` (the first value of the first field) for nearly every text, `neutral` at "
    "most once. Listing the allowed values (*descriptions*, *named*) or showing example "
    "objects (*examples*) made it answer the first value shown for every text (position "
    "bias). Left to measure: the decoder rather than the prompt, choosing an enum value by "
    "the model's likelihood of each whole value, calibrated against a content-free text."
)


def labelled(limit: int | None = None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


async def extract(provider: LocalProvider, prompt: str) -> str:
    request = GenerationRequest(
        messages=(Message("user", prompt),),
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        json_schema=SCHEMA,
    )
    parts: list[str] = []
    async for chunk in provider.stream(request):
        if isinstance(chunk, TextChunk):
            parts.append(chunk.text)
    return "".join(parts)


async def measure(
    shape: PromptShape = DEFAULT_SHAPE,
    *,
    limit: int | None = None,
    provider: LocalProvider | None = None,
) -> dict[str, Any]:
    """Accuracy of ``shape`` on the labelled set: the share of texts whose extracted sentiment,
    topic, and both match the labels; how many validated; seconds per extraction (median and
    max). Loads its own local provider unless one is passed."""
    own = provider is None
    local = provider or LocalProvider("local", LocalProviderSettings(n_threads=2))
    resolved = check_schema(SCHEMA)
    rows = labelled(limit)
    hits = {"sentiment": 0, "topic": 0, "both": 0, "valid": 0}
    seconds: list[float] = []
    misses: list[dict[str, Any]] = []
    try:
        await local.start()
        for row in rows:
            prompt = extraction_prompt(row["text"], None, SCHEMA, shape)
            started = time.perf_counter()
            text = await extract(local, prompt)
            seconds.append(time.perf_counter() - started)
            outcome = parse_and_repair(text)
            data = outcome.data if outcome.ok and isinstance(outcome.data, dict) else {}
            if outcome.ok and not validate(outcome.data, resolved):
                hits["valid"] += 1
            right = [data.get(k) == row[k] for k in ("sentiment", "topic")]
            hits["sentiment"] += right[0]
            hits["topic"] += right[1]
            hits["both"] += all(right)
            if not all(right):
                misses.append({"text": row["text"], "got": data or text})
    finally:
        if own:
            await local.aclose()
    n = len(rows)
    return {
        "n": n,
        **{k: v / n for k, v in hits.items()},
        "seconds_median": statistics.median(seconds),
        "seconds_max": max(seconds),
        "misses": misses,
    }


def accuracy(shape: PromptShape = DEFAULT_SHAPE, *, limit: int | None = None) -> dict[str, Any]:
    """:func:`measure` for callers without an event loop."""
    return asyncio.run(measure(shape, limit=limit))


def section(results: dict[str, dict[str, Any]]) -> str:
    default = next((n for n, s in SHAPES.items() if s == DEFAULT_SHAPE), "?")
    n = next(iter(results.values()))["n"]
    lines = [
        BEGIN,
        "## Extraction accuracy on the local model, per prompt shape",
        "",
        "Generated by `bench/extraction_accuracy.py` (each row keeps the run it comes from, "
        "bench/data/extraction_accuracy_results.json: other sessions share this machine, so "
        f"compare the seconds within one run only). Gemma 3 270M, {n} labelled texts "
        "(bench/data/extraction_labelled.jsonl: sentiment positive/negative/neutral, one of "
        f"{len(TOPICS)} topics, both as enums), the engine's extraction request (grammar, "
        f"temperature 0, max_tokens {MAX_TOKENS}), no re-ask. Shapes "
        "(`tokenwire.output.prompt.PromptShape`): *quoted* — the text as a JSON string; "
        "*descriptions* — a line per field with its allowed values and description; "
        "*examples* — three example objects built from the schema (enum values in turn); "
        "*named* — the instruction names each enum field's values; "
        "*text-last* — the instruction first, the text right before `JSON:`.",
        "",
        "| shape | sentiment | topic | both | valid | s per extraction (median / max) | run |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        mark = " (default)" if name == default else ""
        # Rows from runs before these were recorded have no max or busy cores: shown as nan.
        slowest, busy = r.get("seconds_max", float("nan")), r.get("busy", float("nan"))
        lines.append(
            f"| {name}{mark} | {r['sentiment']:.0%} | {r['topic']:.0%} | {r['both']:.0%} | "
            f"{r['valid']:.0%} | {r['seconds_median']:.1f} / {slowest:.1f} | "
            f"{r.get('run', 'now')}, busy cores {busy:.1f} |"
        )
    lines += ["", FINDINGS, "", END]
    return "\n".join(lines) + "\n"


async def main(names: list[str], limit: int | None, write: bool) -> None:
    busy = bench_measure.wait_quiet(20)
    provider = LocalProvider("local", LocalProviderSettings(n_threads=2))
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            results[name] = await measure(SHAPES[name], limit=limit, provider=provider)
            r = results[name]
            print(
                f"{name}: sentiment {r['sentiment']:.0%} topic {r['topic']:.0%} "
                f"both {r['both']:.0%} valid {r['valid']:.0%} "
                f"median {r['seconds_median']:.1f}s",
                flush=True,
            )
            for miss in r["misses"]:
                print(f"    {miss['got']}  <- {miss['text']}", flush=True)
    finally:
        await provider.aclose()
    if not write:
        print(section(results))
        return
    # Runs are slow on a shared machine: each keeps its shapes' rows, so a run of a few shapes
    # updates the table instead of dropping the others.
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    when = time.strftime("%Y-%m-%d %H:%M")
    for name, r in results.items():
        kept[name] = {**{k: v for k, v in r.items() if k != "misses"}, "run": when, "busy": busy}
    RESULTS.write_text(json.dumps(kept, indent=1) + "\n")
    text = section({name: kept[name] for name in SHAPES if name in kept})
    print(text)
    bench_measure.write_section(text, BEGIN, END)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES), help="repeatable")
    parser.add_argument("--limit", type=int, default=None, help="the first N labelled texts")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.shape or list(SHAPES), args.limit, not args.no_write))

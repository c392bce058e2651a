"""Structured channel on the local model: constrained vs free tokens/s (llguidance, and
llama.cpp's own grammar sampler for comparison), extraction time per schema against the time
the answer took to stream, accuracy on the labelled set (bench/extraction_accuracy.py),
text.done → structured.done per strategy, and the interactive TTFT with and without a
saturated background queue.

    .venv/bin/python bench/structured.py            # ~5-8 min; rewrites its section of
                                                    # docs/PERFORMANCE.md
    .venv/bin/python bench/structured.py --no-write
    .venv/bin/python bench/structured.py --extraction-only   # the three-field extraction
                                                             # against the answer; prints only

Ratios are measured side by side in one run (interleaved), so they hold on a busy machine;
absolute times are printed with the machine's load average.

Runs the engine in-process on the default configuration (Gemma 3 270M, one model slot, the
priority scheduler in front of it). Times are taken where a client would take them: when the
event comes out of the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from tokenwire import Engine, Settings
from tokenwire.engine.scheduler import Priority
from tokenwire.output.bounds import bounded_schema
from tokenwire.providers import GenerationRequest, Message, TextChunk
from tokenwire.providers.grammar import GrammarEngine

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- structured:begin -->", "<!-- structured:end -->"

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topic": {"type": "string", "maxLength": 40},
    },
    "required": ["sentiment", "topic"],
}
PROMPTS = [
    "My order arrived broken and nobody answers the phone.",
    "I love the new update, the app is so much faster!",
    "What time does the store open on Sunday?",
    "The hotel room was clean and the view was beautiful.",
    "The battery dies after an hour, this is unacceptable.",
]


THREE_FIELDS = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topic": {"type": "string", "maxLength": 40},
        "urgent": {"type": "boolean"},
    },
    "required": ["sentiment", "topic", "urgent"],
}
NOTES = {  # issue 14's schema, as users write it (strings without maxLength)
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "action_items": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["sentiment", "topics", "action_items"],
}
NESTED = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "mood": {"enum": ["happy", "upset", "calm"]},
                "name": {"type": "string"},
            },
            "required": ["mood"],
        },
        "requests": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"what": {"type": "string"}, "urgent": {"type": "boolean"}},
                "required": ["what", "urgent"],
            },
            "maxItems": 3,
        },
    },
    "required": ["customer", "requests"],
}
SCHEMAS = {"three fields": THREE_FIELDS, "issue 14 (unbounded strings)": NOTES, "nested": NESTED}
SPEED_SCHEMA = {  # long enough output to time the per-token rate
    "type": "object",
    "properties": {"summary": {"type": "string", "maxLength": 300}},
    "required": ["summary"],
}
SPEED_PROMPT = (
    "Text: The new phone has a bright screen, a battery that lasts two days, a fast camera "
    "and a price that is lower than last year's model.\nSummarize the text as JSON.\nJSON:"
)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def decode_rate(llm: Any, kind: str, tokens: int, engine: GrammarEngine) -> tuple[int, float]:
    """Tokens sampled and seconds from the first to the last, for one generation of ``kind``:
    free, llguidance, or llama.cpp's grammar (the engine this project used before)."""
    from llama_cpp import LogitsProcessorList, llama_grammar

    ids = llm.tokenize(SPEED_PROMPT.encode(), add_bos=True, special=True)
    sampling: dict[str, Any] = {"max_tokens": tokens, "temperature": 0.0, "stream": True}
    bounded = bounded_schema(SPEED_SCHEMA, max_tokens=tokens)
    if kind == "llguidance":
        sampling["logits_processor"] = LogitsProcessorList(
            [engine.constraint(bounded, leading_space=True)]
        )
    elif kind == "llama.cpp grammar":
        gbnf = llama_grammar.json_schema_to_gbnf(json.dumps(bounded))
        sampling["grammar"] = llama_grammar.LlamaGrammar.from_string(gbnf, verbose=False)
    else:
        # Free text must not stop early: end-of-text masked out (a processor costs a copy of
        # the logits, as llguidance's does, so the comparison is of the masks alone).
        eos = llm.token_eos()

        def no_eos(_ids: Any, scores: Any) -> Any:
            scores[eos] = -float("inf")
            return scores

        sampling["logits_processor"] = LogitsProcessorList([no_eos])
    llm.reset()
    llm.eval(ids)
    first = last = None
    count = 0
    for _part in llm.create_completion(ids, **sampling):
        last = time.perf_counter()
        first = first or last
        count += 1
    assert first is not None and last is not None
    return count, last - first


async def constrained_speed(engine: Engine, rounds: int = 4) -> dict[str, list[float]]:
    """Tokens/s per decoding kind, interleaved round by round on the same model and prompt."""
    provider = engine.providers["local"]
    grammar: list[GrammarEngine] = []
    rates: dict[str, list[float]] = {"free": [], "llguidance": [], "llama.cpp grammar": []}

    def one_round(llm: Any) -> None:
        if not grammar:
            grammar.append(GrammarEngine(llm))
        for kind in rates:
            count, seconds = decode_rate(llm, kind, 120, grammar[0])
            rates[kind].append((count - 1) / seconds)

    for _ in range(rounds):
        await provider.call(one_round)  # type: ignore[attr-defined]
    return rates


async def extraction_vs_answer(engine: Engine, schema: dict[str, Any]) -> dict[str, Any]:
    """Per prompt: how long the answer took to stream (first text.delta → text.done) and how
    long the sequential extraction after it (text.done → structured.done)."""
    answer_s: list[float] = []
    extraction_s: list[float] = []
    evaluated: list[int] = []  # the extraction prompt's tokens evaluated (not reused)
    prompt_tokens: list[int] = []
    ok = 0
    local = engine.providers["local"]
    for prompt in PROMPTS:
        body = {
            "prompt": prompt,
            "max_tokens": 32,
            "temperature": 0,
            "extraction": {"schema": schema, "strategy": "sequential"},
        }
        first = text_done = None
        async for event in (await engine.submit(body)).events():
            now = time.perf_counter()
            if event.type == "text.delta" and first is None:
                first = now
            elif event.type == "text.done":
                text_done = now
            elif event.type in ("structured.done", "structured.error") and text_done:
                extraction_s.append(now - text_done)
            elif event.type == "done":
                ok += (event.structured or {}).get("status") == "ok"  # type: ignore[union-attr]
        if first is not None and text_done is not None:
            answer_s.append(text_done - first)
        extracted = local.turns[-1]  # type: ignore[attr-defined]
        prompt_tokens.append(extracted.prompt_tokens)
        evaluated.append(extracted.prompt_tokens - extracted.prompt_reused)
    ratios = [e / a for e, a in zip(extraction_s, answer_s, strict=False) if a > 0]
    return {
        "answer": answer_s,
        "extraction": extraction_s,
        "ratios": ratios,
        "ok": ok,
        "evaluated": evaluated,
        "prompt_tokens": prompt_tokens,
    }


async def labelled_accuracy(engine: Engine) -> str:
    """The labelled set's accuracy with the default prompt shape (bench/extraction_accuracy.py,
    the other half of this benchmark), on this run's model."""
    try:
        import extraction_accuracy
    except ImportError:
        return "bench/extraction_accuracy.py not found: no accuracy column"
    local = engine.providers["local"]
    result = await extraction_accuracy.measure(provider=local)  # type: ignore[arg-type]
    return (
        f"labelled set ({result['n']} texts, default prompt shape, this engine): sentiment "
        f"{result['sentiment']:.0%}, topic {result['topic']:.0%}, both {result['both']:.0%}, "
        f"valid {result['valid']:.0%}; median {result['seconds_median'] * 1000:.0f} ms per "
        "extraction"
    )


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f}"


async def strategy_latency(engine: Engine, strategy: str) -> dict[str, Any]:
    gaps: list[float] = []
    ok = 0
    attempts: list[int] = []
    for prompt in PROMPTS:
        body = {
            "prompt": prompt,
            "max_tokens": 32,
            "temperature": 0,
            "extraction": {"schema": SCHEMA, "strategy": strategy},
        }
        text_done = structured_done = None
        async for event in (await engine.submit(body)).events():
            now = time.perf_counter()
            if event.type == "text.done":
                text_done = now
            elif event.type in ("structured.done", "structured.error"):
                structured_done = now
            elif event.type == "done":
                record = event.structured or {}  # type: ignore[union-attr]
                ok += record.get("status") == "ok"
                attempts.append(int(record.get("attempts", 0)))
        if text_done is not None and structured_done is not None:
            gaps.append(structured_done - text_done)
    return {"strategy": strategy, "gaps": gaps, "ok": ok, "attempts": attempts}


async def ttft(engine: Engine, n: int) -> list[float]:
    out: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 16, "temperature": 0}
        first = None
        async for event in (await engine.submit(body)).events():
            if event.type == "text.delta" and first is None:
                first = time.perf_counter() - t0
        if first is not None:
            out.append(first)
    return out


async def background_call(engine: Engine, prompt: str) -> None:
    """One extraction-sized call at background priority, as the extraction path makes it."""
    provider = engine.providers["local"]
    request = GenerationRequest(
        messages=(Message("user", f"Text: {prompt}\nExtract the fields as JSON.\nJSON: "),),
        max_tokens=48,
        temperature=0.0,
        json_schema=SCHEMA,
    )
    async with engine.schedulers["local"].slot(Priority.BACKGROUND, tokens=48):
        async for chunk in provider.stream(request):
            if isinstance(chunk, TextChunk):
                pass


async def main(write: bool) -> str:
    async with Engine(Settings(extraction={"timeout_s": 120, "max_tokens": 64})) as engine:
        await ttft(engine, 2)  # warm the model and its prompt cache
        state_before = load()
        speed = await constrained_speed(engine)
        per_schema = {name: await extraction_vs_answer(engine, s) for name, s in SCHEMAS.items()}
        accuracy = await labelled_accuracy(engine)
        rows = [await strategy_latency(engine, s) for s in ("sequential", "parallel", "inline")]
        quiet = await ttft(engine, 6)
        queue = [asyncio.create_task(background_call(engine, p)) for p in PROMPTS * 6]
        await asyncio.sleep(0.5)  # let the queue form behind the first background call
        waiting = engine.schedulers["local"].stats().waiting[Priority.BACKGROUND]
        loaded = await ttft(engine, 6)
        for task in queue:
            task.cancel()
        await asyncio.gather(*queue, return_exceptions=True)
    lines = [
        BEGIN,
        "## Structured channel (local model)",
        "",
        f"Generated by `bench/structured.py` on {time.strftime('%Y-%m-%d %H:%M')}. Gemma 3 270M, "
        "one model slot behind the priority scheduler; schema: sentiment (enum) + topic "
        f"(string <= 40 chars); {len(PROMPTS)} prompts per strategy, temperature 0, medians. "
        f"Machine: {state_before} at the start, {load()} at the end (other work shared the "
        "cores).",
        "",
        "Decoding speed, 4 interleaved rounds of up to 120 tokens on one prompt (greedy; free "
        "text with end-of-text masked out so it runs as long):",
        "",
        "| decoding | tokens/s (median) | of free |",
        "|---|---:|---:|",
    ]
    free = statistics.median(speed["free"])
    for kind, values in speed.items():
        rate = statistics.median(values)
        lines.append(f"| {kind} | {rate:.1f} | {rate / free:.0%} |")
    lines += [
        "",
        "Sequential extraction per schema (llguidance, decoder bounds of output/bounds.py; the "
        "prompt continues the answering transcript, whose evaluated prefix llama.cpp reuses; "
        "forced tokens evaluated in one batch): the answer's streaming time (first delta → "
        "text.done) against the extraction after it (text.done → structured.done), per turn; "
        "the extraction prompt's tokens evaluated against its length (medians):",
        "",
        "| schema | answer ms | extraction ms | extraction / answer (median, max) | "
        "prompt tokens evaluated / total | ok |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in per_schema.items():
        ratios = row["ratios"]
        spread = f"{statistics.median(ratios):.2f}x, {max(ratios):.2f}x" if ratios else "-"
        lines.append(
            f"| {name} | {ms(row['answer'])} | {ms(row['extraction'])} | {spread} | "
            f"{statistics.median(row['evaluated']):.0f} / "
            f"{statistics.median(row['prompt_tokens']):.0f} | {row['ok']}/{len(PROMPTS)} |"
        )
    lines += [
        "",
        f"Accuracy: {accuracy}.",
        "",
        "Strategies (schema: sentiment enum + topic string <= 40 chars):",
        "",
        "| strategy | text.done → structured.done ms | ok | attempts per turn |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['strategy']} | {ms(row['gaps'])} | {row['ok']}/{len(PROMPTS)} | "
            f"{statistics.median(row['attempts']) if row['attempts'] else '-'} |"
        )
    lines += [
        "",
        "| interactive TTFT | median ms | runs |",
        "|---|---:|---:|",
        f"| quiet model | {ms(quiet)} | {len(quiet)} |",
        f"| {waiting} background extraction calls queued | {ms(loaded)} | {len(loaded)} |",
        END,
    ]
    section = "\n".join(lines)
    if write:
        doc = DOC.read_text()
        if BEGIN in doc:
            doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), section, doc, flags=re.S)
        else:
            doc = doc.rstrip() + "\n\n" + section + "\n"
        DOC.write_text(doc)
    return section


async def extraction_only() -> str:
    """The three-field schema's extraction against its answer, alone (a quick check of the
    figure issue 14 sets: extraction at most 1.5x the answer's streaming time)."""
    async with Engine(Settings(extraction={"timeout_s": 120, "max_tokens": 64})) as engine:
        await ttft(engine, 2)
        before = load()
        row = await extraction_vs_answer(engine, THREE_FIELDS)
    ratios = ", ".join(f"{r:.2f}x" for r in row["ratios"])
    evaluated = (
        f"{statistics.median(row['evaluated']):.0f}/{statistics.median(row['prompt_tokens']):.0f}"
    )
    median = statistics.median(row["ratios"]) if row["ratios"] else float("nan")
    return (
        f"three fields: answer {ms(row['answer'])} ms, extraction {ms(row['extraction'])} ms, "
        f"extraction / answer median {median:.2f}x ({ratios}), prompt tokens evaluated "
        f"{evaluated}, ok {row['ok']}/{len(PROMPTS)}; "
        f"{before} at the start, {load()} at the end"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--extraction-only", action="store_true")
    args = parser.parse_args()
    if args.extraction_only:
        print(asyncio.run(extraction_only()))
    else:
        print(asyncio.run(main(write=not args.no_write)))

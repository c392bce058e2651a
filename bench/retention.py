"""What a finished stream costs while it is retained for resume: resident memory (RSS) per
retained stream, against the size of its answer, and the bytes the event log counts for it.

    .venv/bin/python bench/retention.py             # ~30 s; rewrites its section of
                                                    # docs/PERFORMANCE.md
    .venv/bin/python bench/retention.py --no-write

The engine runs in-process (embedded, no store) on the scripted provider with coalescing off,
so every token is one `text.delta`, as a stream at 50 tokens/s reads through the 15 ms
coalescing window. Each run is bounded: a fixed number of turns, every one read to its end,
then the RSS growth over a warmed-up baseline is divided by the streams still retained.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
from typing import Any

from measure import write_section

from tokenwire import Engine, Settings
from tokenwire.bus import MemoryEventLog

BEGIN, END = "<!-- retention:begin -->", "<!-- retention:end -->"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def settings() -> Settings:
    return Settings(
        providers={"s": {"kind": "scripted"}},
        routes={"default": {"providers": ["s"]}},
        store={"url": ""},
        coalesce={"window_ms": 0},
        limits={"max_active_turns": 10_000, "stream_retention_s": 3600},
    )


async def one_turn(engine: Engine, tokens: list[str]) -> int:
    handle = await engine.submit({"prompt": "x", "script": {"tokens": tokens}})
    answer = 0
    async for event in handle.events():
        if event.type == "done":
            answer = len(event.answer.encode())  # type: ignore[union-attr]
    return answer


async def run(turns: int, answer_tokens: int) -> dict[str, Any]:
    tokens = [f"w{i % 1000:03d} " for i in range(answer_tokens)]
    async with Engine(settings()) as engine:
        for _ in range(20):  # warm up: allocator arenas, caches
            await one_turn(engine, tokens)
        if isinstance(engine.log, MemoryEventLog):
            for stream_id in list(engine.log._streams):
                engine.log.drop(stream_id)
        gc.collect()
        before = rss_bytes()
        answers = 0
        for _ in range(turns):
            answers += await one_turn(engine, tokens)
        gc.collect()
        after = rss_bytes()
        log = engine.log
        retained = len(log) if isinstance(log, MemoryEventLog) else turns
        counted = getattr(log, "retained_bytes", None)
    return {
        "turns": turns,
        "events": answer_tokens + 3,
        "answer": answers / turns,
        "retained": retained,
        "rss_per_stream": (after - before) / max(1, retained),
        "counted_per_stream": None if counted is None else counted / max(1, retained),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def main(args: argparse.Namespace) -> str:
    rows = []
    for answer_tokens in args.answer_tokens:
        result = await run(args.turns, answer_tokens)
        rows.append(result)
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in result.items()})
    lines = [
        BEGIN,
        "## Retention: what a finished stream costs while it can be resumed",
        "",
        f"`bench/retention.py`: {args.turns} scripted turns per row, in-process, coalescing off "
        "(one `text.delta` per token of 5 bytes), every turn read to its end and retained "
        "(`stream_retention_s` longer than the run). RSS per stream = the process's RSS growth "
        "over a warmed-up baseline / the streams retained; counted = what the event log "
        "charges the stream against `max_retained_bytes`.",
        "",
        "| events per stream | answer | RSS per retained stream | RSS / answer | counted |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        counted = r["counted_per_stream"]
        lines.append(
            f"| {r['events']} | {r['answer'] / 1024:.1f} KiB "
            f"| {r['rss_per_stream'] / 1024:.1f} KiB | {r['rss_per_stream'] / r['answer']:.1f} "
            f"| {'—' if counted is None else f'{counted / 1024:.1f} KiB'} |"
        )
    lines += ["", *args.note, END]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--answer-tokens", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--note", action="append", default=[], help="a line under the table")
    parser.add_argument("--no-write", action="store_true")
    arguments = parser.parse_args()
    section = asyncio.run(main(arguments))
    if not arguments.no_write:
        write_section(section, BEGIN, END)

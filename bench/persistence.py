"""What recording turns costs: turns/s and the delay the record write puts in front of `done`,
with the store off, on a SQLite file, and on Postgres.

    .venv/bin/python bench/persistence.py            # ~1 min; rewrites its section of
                                                     # docs/PERFORMANCE.md
    .venv/bin/python bench/persistence.py --no-write
    .venv/bin/python bench/persistence.py --postgres postgresql+asyncpg://postgres@127.0.0.1/test

The engine runs in-process on the scripted provider (no delays), so the numbers are the
engine's own plus the database's. `done` delay: from `text.done` to `done` as a reader sees
them (the record is written between the two). Each run is bounded: a fixed number of turns.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from tokenwire import Engine, Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- persistence:begin -->", "<!-- persistence:end -->"
TOKENS = [f"t{i} " for i in range(20)]


def settings(url: str) -> Settings:
    return Settings(
        providers={"s": {"kind": "scripted"}},
        routes={"default": {"providers": ["s"]}},
        store={"url": url},
        limits={"max_active_turns": 10_000},
    )


async def one_turn(engine: Engine) -> tuple[float, float]:
    """(time to the first text.delta, text.done → done)"""
    started = time.perf_counter()
    handle = await engine.submit({"prompt": "x", "script": {"tokens": TOKENS}})
    first = text_done = 0.0
    async for event in handle.events():
        if event.type == "text.delta" and not first:
            first = time.perf_counter() - started
        elif event.type == "text.done":
            text_done = time.perf_counter()
        elif event.type == "done":
            return first, time.perf_counter() - text_done
    raise AssertionError("no done")


async def run(url: str, turns: int, concurrency: int) -> dict[str, float]:
    async with Engine(settings(url)) as engine:
        for _ in range(20):  # warm up (connections, migrations, caches)
            await one_turn(engine)
        delays: list[float] = []
        ttfts: list[float] = []
        queue = list(range(turns))

        async def worker() -> None:
            while queue:
                queue.pop()
                ttft, delay = await one_turn(engine)
                ttfts.append(ttft)
                delays.append(delay)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    delays.sort()
    return {
        "ttft_ms": statistics.median(ttfts) * 1000,
        "turns_per_s": turns / elapsed,
        "p50_ms": statistics.median(delays) * 1000,
        "p99_ms": delays[int(len(delays) * 0.99) - 1] * 1000,
    }


async def fresh_postgres(base: str) -> str:
    name = f"tokenwire_bench_{int(time.time())}"
    admin = base.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.rsplit("/", 1)[0] + "/" + name


async def main(args: argparse.Namespace) -> str:
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("off", ""), ("SQLite file", f"sqlite+aiosqlite:///{tmp}/bench.db")]
        if args.postgres:
            targets.append(("Postgres (loopback)", await fresh_postgres(args.postgres)))
        for label, url in targets:
            for concurrency in (1, 50):
                result = await run(url, args.turns, concurrency)
                rows.append((label, concurrency, result))
                print(label, concurrency, {k: round(v, 2) for k, v in result.items()})
    lines = [
        BEGIN,
        f"{args.turns} scripted turns of 20 tokens each per row, in-process; "
        "first text = `submit` → first `text.delta` (a turn waits for its running row before "
        "its first visible text); `done` delay = `text.done` → `done` as a reader sees it (the "
        "record write sits between them).",
        "",
        "| store | turns at once | turns/s | first text p50 | `done` delay p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for label, concurrency, r in rows:
        lines.append(
            f"| {label} | {concurrency} | {r['turns_per_s']:.0f} | {r['ttft_ms']:.2f} ms "
            f"| {r['p50_ms']:.2f} ms "
            f"| {r['p99_ms']:.2f} ms |"
        )
    lines.append(END)
    return "\n".join(lines)


def write(section: str) -> None:
    text = DOC.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), section, text, flags=re.S)
    else:
        text += "\n## Persistence: what recording a turn costs\n\n" + section + "\n"
    DOC.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-write", action="store_true")
    arguments = parser.parse_args()
    section: Any = asyncio.run(main(arguments))
    if not arguments.no_write:
        write(section)
    print(section)

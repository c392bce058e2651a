"""What routing, retrieval and tools cost a turn: the knowledge base's add and search speed,
the stage timings (``done.timings``) of turns that retrieve, call a tool or evaluate routing
rules, and what passages in the prompt cost the local model's first token.

    .venv/bin/python bench/turn_stages.py            # ~3 min on a quiet machine (up to ~7
                                                     # when others keep it busy); rewrites its
                                                     # section of docs/PERFORMANCE.md
    .venv/bin/python bench/turn_stages.py --quick    # 1,000 chunks only, fewer turns: ~1-2 min
    .venv/bin/python bench/turn_stages.py --no-write --parts kb,turns

Three parts, all in this process through ``tokenwire.Engine`` / ``open_knowledge_base`` (the
only other process is the Postgres server, on loopback):

1. **kb**: synthetic Markdown documents (seeded: a made-up language of 5,000 words with Zipf
   frequencies; a title and four ``##`` sections of 600-1,100 characters each, so four chunks
   per document) are added with ``add_paths`` to an empty knowledge base of 1,000 and 10,000
   chunks, on a SQLite file and on Postgres (a throwaway database ``tw_bench_<random>`` on
   ``--postgres``, dropped afterwards); then 200 natural-language questions of 5-10 words (a
   stop-word frame around content words drawn with the documents' frequencies, the 100 most
   common words left out) are searched one at a time, top 4; then 50 *broad* questions drawn
   from every word (most match nearly every chunk: a worst case).
2. **turns**: the scripted provider (``scripted = true``, 20 tokens, no delays), store off; four
   engines, one turn each in turn (so drift on the shared machine hits all alike): a plain
   route; a route with ``retrieval`` (top 4) over the 1,000-chunk SQLite knowledge base of
   part 1 (``Engine(retriever=...)``); a route with one tool round (an async tool returning a
   small dict, then 20 tokens); 10 routing rules (keywords and equals conditions, the last
   one matching). ``done.timings`` p50/p99 per stage, and the garbage collector's pauses.
3. **local**: the default provider (Gemma 3 270M through llama.cpp, 2 threads), max_tokens 32,
   temperature 0, the question below without retrieval and with a retrieval route over the
   fixture corpus ``tests/fixtures/kb`` (top_k 2, then 4): first token and prompt tokens.

Every loop is bounded in count and time. The machine (2 cores) is shared with other sessions:
before each measurement the script waits (up to 20 s) for it to go quiet, reports the busy cores
that were not its own (*other*), and measures once more when they passed 0.5 core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from measure import cpu_seconds, machine_busy, write_section

from tokenwire import Done, Engine, Settings
from tokenwire.retrieval import KBStats, KnowledgeBase, open_knowledge_base
from tokenwire.retrieval.query import fts5_match_expression, query_terms
from tokenwire.tools import ToolRegistry

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PERFORMANCE.md"
CORPUS = ROOT / "tests" / "fixtures" / "kb"
BEGIN, END = "<!-- turn_stages:begin -->", "<!-- turn_stages:end -->"
HEADING = "## Routes, retrieval and tools: what each stage costs"
QUESTION = "How often should the Lumen kettle be descaled?"
TOKENS = [f"w{i} " for i in range(20)]
SEED = 20261201
VOCABULARY = 5000
COMMON_WORDS = 100
"""Questions hold none of the made-up language's 100 most common words (57% of its text),
as real questions, once tokenwire drops English stop words, hold few of English's."""
BROAD_QUESTIONS = 50
CHUNKS_PER_DOC = 4
QUIET_WAIT_S = 20.0
WAIT_BUDGET_S = 100.0
CONTAMINATED = 0.5
"""Cores other processes may use during a measurement before it is measured again (once)."""
T = TypeVar("T")
TURN_TIMEOUT_S = 10.0
LOCAL_TURN_TIMEOUT_S = 60.0
STAGES = (
    "precheck",
    "route",
    "retrieval",
    "tool.lookup",
    "tools",
    "first_token",
    "post_process",
    "total",
)


# ---------------------------------------------------------------- machine


WAITED = [0.0]
"""Seconds spent waiting for a quiet machine so far (bounded by WAIT_BUDGET_S)."""


async def wait_quiet(threshold: float = 0.3) -> float:
    """Wait (up to QUIET_WAIT_S, and while the run's WAIT_BUDGET_S lasts) until the machine is
    nearly idle; the last busy cores seen."""
    started = time.monotonic()
    limit = min(QUIET_WAIT_S, max(0.0, WAIT_BUDGET_S - WAITED[0]))
    try:
        while True:
            b0 = machine_busy()
            await asyncio.sleep(0.5)
            busy = (machine_busy() - b0) / 0.5
            if busy < threshold or time.monotonic() - started > limit:
                return busy
    finally:
        WAITED[0] += time.monotonic() - started


async def quiet_measure(
    label: str, measure: Callable[[], Awaitable[T]], meter_of: Callable[[T], Meter]
) -> T:
    """Wait for a quiet machine and measure; when other processes used more than
    CONTAMINATED cores meanwhile, wait and measure once more, keeping the cleaner run."""
    best: T | None = None
    for attempt in (1, 2):
        busy = await wait_quiet()
        print(f"{label}: machine busy before {busy:.2f} cores", flush=True)
        result = await measure()
        other = meter_of(result).other
        if best is None or other < meter_of(best).other:
            best = result
        if other <= CONTAMINATED or attempt == 2 or WAITED[0] >= WAIT_BUDGET_S:
            break
        print(f"{label}: other processes used {other:.2f} cores: measuring again", flush=True)
    assert best is not None
    return best


@dataclass
class Meter:
    """Cores used while measuring: this process (all its threads), a database server's
    backends serving it (``extra``), and the rest of the machine (*other*)."""

    wall: float = 0.0
    own: float = 0.0
    extra: float = 0.0
    other: float = 0.0
    _t0: float = 0.0
    _m0: float = 0.0
    _p0: float = 0.0

    def start(self) -> Meter:
        self._t0, self._m0, self._p0 = time.perf_counter(), machine_busy(), time.process_time()
        return self

    def add(self, other: Meter) -> None:
        """Fold another measurement into this one (cores weighted by wall time)."""
        wall = self.wall + other.wall
        for name in ("own", "extra", "other"):
            total = getattr(self, name) * self.wall + getattr(other, name) * other.wall
            setattr(self, name, total / wall if wall else 0.0)
        self.wall = wall

    def stop(self, extra_cpu_s: float = 0.0) -> Meter:
        self.wall = time.perf_counter() - self._t0
        machine = (machine_busy() - self._m0) / self.wall
        self.own = (time.process_time() - self._p0) / self.wall
        self.extra = extra_cpu_s / self.wall
        self.other = max(0.0, machine - self.own - self.extra)
        return self


# ---------------------------------------------------------------- numbers


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


# ---------------------------------------------------------------- synthetic corpus

STOP_FRAMES = (
    ("how", "do", "i"),
    ("what", "is", "the"),
    ("why", "does", "the"),
    ("where", "can", "i", "find", "the"),
    ("how", "often", "should", "the"),
    ("can", "i"),
)
"""Question openings; all stop words but ``often`` and ``find``, as in real questions."""


@dataclass
class Corpus:
    """A seeded made-up language: words with Zipf frequencies, documents and questions."""

    seed: int
    words: list[str] = field(default_factory=list)
    cumulative: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        onsets = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl sk st tr".split()
        vowels = "a e i o u ai ea ou".split()
        codas = ["", "", "", "n", "r", "s", "l", "m", "st", "nd"]
        seen: set[str] = set()
        while len(self.words) < VOCABULARY:
            syllables = rng.choice((1, 2, 2, 2, 3, 3, 4))
            word = "".join(
                rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                for _ in range(syllables)
            )
            if len(word) >= 3 and word not in seen:
                seen.add(word)
                self.words.append(word)
        total = 0.0
        for rank in range(VOCABULARY):
            total += 1.0 / (rank + 1)
            self.cumulative.append(total)

    def draw(self, rng: random.Random, k: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cumulative, k=k)

    def sentence(self, rng: random.Random) -> str:
        words = self.draw(rng, rng.randint(6, 14))
        return " ".join(words).capitalize() + "."

    def section(self, rng: random.Random) -> str:
        """Two paragraphs of 600-1,100 characters in all (a chunk is at most 1,200)."""
        target = rng.randint(600, 1100)
        sentences: list[str] = []
        size = 0
        while True:
            candidate = self.sentence(rng)
            if size + len(candidate) + 2 > target and sentences:
                break
            sentences.append(candidate)
            size += len(candidate) + 1
        half = max(1, len(sentences) // 2)
        return " ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:])

    def heading(self, rng: random.Random, low: int, high: int) -> str:
        return " ".join(rng.sample(self.words[50:], rng.randint(low, high))).title()

    def document(self, rng: random.Random) -> str:
        parts = [f"# {self.heading(rng, 3, 5)}\n"]
        for _ in range(CHUNKS_PER_DOC):
            parts.append(f"## {self.heading(rng, 2, 4)}\n\n{self.section(rng)}\n")
        return "\n".join(parts)

    def write_documents(self, directory: Path, n_docs: int, seed: int) -> None:
        rng = random.Random(seed)
        directory.mkdir(parents=True)
        for i in range(n_docs):
            (directory / f"doc-{i:05d}.md").write_text(self.document(rng))

    def questions(self, n: int, seed: int, *, skip: int = 0) -> list[str]:
        """Natural-language questions of 5-10 words: a stop-word frame + content words drawn
        with the documents' frequencies, the ``skip`` most common words left out."""
        rng = random.Random(seed)
        words = self.words[skip:]
        base = self.cumulative[skip - 1] if skip else 0.0
        cumulative = [c - base for c in self.cumulative[skip:]]
        out: list[str] = []
        while len(out) < n:
            frame = rng.choice(STOP_FRAMES)
            length = rng.randint(5, 10)
            k = max(2, length - len(frame))
            content = rng.choices(words, cum_weights=cumulative, k=k)
            out.append((" ".join((*frame, *content)) + "?").capitalize())
        return out


# ---------------------------------------------------------------- part 1: knowledge base


@dataclass
class KBResult:
    backend: str
    state: str
    chunks: int
    documents: int
    add_s: float
    search_ms: list[float]
    broad_ms: list[float]
    hits: float
    add_meter: Meter
    search_meter: Meter


class PostgresBackends:
    """CPU time of the Postgres backends serving one database (a server on this machine)."""

    def __init__(self, admin_dsn: str, database: str) -> None:
        self.admin_dsn, self.database = admin_dsn, database
        self.seen: dict[int, float] = {}

    async def delta(self) -> float:
        """CPU seconds the database's backends used since the last call."""
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            pids = [
                r["pid"]
                for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
                )
            ]
        finally:
            await conn.close()
        used = 0.0
        for pid in pids:
            now = cpu_seconds([pid])
            used += max(0.0, now - self.seen.get(pid, 0.0))
            self.seen[pid] = now
        return used


async def add_documents(
    kb: KnowledgeBase, docs: Path, pg: PostgresBackends | None
) -> tuple[float, Meter, KBStats]:
    """Add every document of ``docs`` to an empty knowledge base: (seconds, cores, stats)."""
    await kb.stats()  # creates the tables (not timed)
    await wait_quiet()
    if pg is not None:
        await pg.delta()
    meter = Meter().start()
    started = time.perf_counter()
    results = await kb.add_paths([docs], base_url="https://docs.example.com/")
    add_s = time.perf_counter() - started
    add_meter = meter.stop(await pg.delta() if pg is not None else 0.0)
    bad = [r for r in results if r.status != "added" or r.chunks != CHUNKS_PER_DOC]
    if bad:
        raise AssertionError(f"unexpected add results: {bad[:3]}")
    return add_s, add_meter, await kb.stats()


async def search_all(
    kb: KnowledgeBase,
    label: str,
    questions: list[str],
    broad: list[str],
    pg: PostgresBackends | None,
) -> tuple[list[float], float, Meter, list[float]]:
    """Search every question, then every broad one, one at a time (after 20 warm-up
    searches): (latencies ms, hits per question, cores, broad latencies ms)."""
    for q in questions[:20]:  # warm-up: caches, plans, the connection
        await kb.search(f"{q} warm", limit=4)

    async def searches() -> tuple[list[float], float, Meter, list[float]]:
        if pg is not None:
            await pg.delta()
        latencies: list[float] = []
        hits = 0
        meter = Meter().start()
        deadline = time.monotonic() + 60
        for q in questions:
            t0 = time.perf_counter()
            found = await kb.search(q, limit=4)
            latencies.append((time.perf_counter() - t0) * 1000)
            hits += len(found)
            if time.monotonic() > deadline:
                break
        search_meter = meter.stop(await pg.delta() if pg is not None else 0.0)
        broad_ms: list[float] = []
        deadline = time.monotonic() + 30
        for q in broad:
            t0 = time.perf_counter()
            await kb.search(q, limit=4)
            broad_ms.append((time.perf_counter() - t0) * 1000)
            if time.monotonic() > deadline:
                break
        return latencies, hits / len(latencies), search_meter, broad_ms

    return await quiet_measure(label, searches, lambda r: r[2])


async def autovacuumed(dsn: str) -> bool:
    """Whether autovacuum has vacuumed or analyzed ``kb_chunks`` yet."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT last_autovacuum, last_autoanalyze FROM pg_stat_user_tables"
            " WHERE relname = 'kb_chunks'"
        )
    finally:
        await conn.close()
    return row is not None and (row[0] is not None or row[1] is not None)


async def vacuum_analyze(dsn: str) -> float:
    """VACUUM ANALYZE the knowledge base's tables (what autovacuum does after a bulk load);
    seconds it took."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE kb_chunks")
        await conn.execute("VACUUM ANALYZE kb_documents")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def postgres_settings(url: str) -> tuple[str, str]:
    """The server's version and the settings that matter here; and its autovacuum setting."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=10)
    try:
        names = ("server_version", "autovacuum", "work_mem", "shared_buffers", "fsync")
        values = {name: await conn.fetchval(f"SHOW {name}") for name in names}
    finally:
        await conn.close()
    version = str(values.pop("server_version")).split()[0]
    shown = ", ".join(f"`{name}` {value}" for name, value in values.items())
    return f"Postgres {version}: {shown}", str(values["autovacuum"])


async def create_database(admin_dsn: str) -> str:
    name = f"tw_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def matched_chunks(path: Path, questions: list[str]) -> float:
    """Median number of chunks a question matches (any of its terms) in a SQLite KB file."""
    counts: list[int] = []
    connection = sqlite3.connect(path)
    try:
        for q in questions:
            expression = fts5_match_expression(query_terms(q))
            row = connection.execute(
                "SELECT count(*) FROM kb_chunks_fts WHERE kb_chunks_fts MATCH ?", (expression,)
            ).fetchone()
            counts.append(int(row[0]))
    finally:
        connection.close()
    return statistics.median(counts)


async def part_kb(
    args: argparse.Namespace, corpus: Corpus, tmp: Path, questions: list[str], broad: list[str]
) -> tuple[list[KBResult], dict[str, Path], dict[int, tuple[float, float]]]:
    """Every backend x size; returns the results, the SQLite files by size and, by size, the
    median chunks matched by a question and by a broad question."""
    sizes = [1000] if args.quick else [1000, 10_000]
    docs: dict[int, Path] = {}
    for size in sizes:
        docs[size] = tmp / f"docs-{size}"
        corpus.write_documents(docs[size], size // CHUNKS_PER_DOC, seed=SEED + size)
    results: list[KBResult] = []
    sqlite_files: dict[str, Path] = {}
    matched: dict[int, tuple[float, float]] = {}
    for size in sizes:
        path = tmp / f"kb-{size}.db"
        kb = open_knowledge_base(f"sqlite+aiosqlite:///{path}")
        try:
            add_s, add_meter, stats = await add_documents(kb, docs[size], None)
            print(f"SQLite {size}: added in {add_s:.1f} s", flush=True)
            found = await search_all(kb, f"SQLite {size}, searches", questions, broad, None)
        finally:
            await kb.aclose()
        results.append(
            KBResult(
                "SQLite file",
                "",
                stats["chunks"],
                stats["documents"],
                add_s,
                found[0],
                found[3],
                found[1],
                add_meter,
                found[2],
            )
        )
        report_kb(results[-1])
        sqlite_files[str(size)] = path
        matched[size] = (matched_chunks(path, questions), matched_chunks(path, broad))
    if args.postgres:
        admin = args.postgres.replace("postgresql+asyncpg://", "postgresql://")
        for size in sizes:
            name = await create_database(admin)
            dsn = admin.rsplit("/", 1)[0] + "/" + name
            try:
                kb = open_knowledge_base(args.postgres.rsplit("/", 1)[0] + "/" + name)
                try:
                    pg = PostgresBackends(admin, name)
                    add_s, add_meter, stats = await add_documents(kb, docs[size], pg)
                    print(f"Postgres {size}: added in {add_s:.1f} s", flush=True)
                    label = f"Postgres {size}, searches"
                    fresh = await search_all(kb, label, questions, broad, pg)
                    state = "right after adding"
                    if await autovacuumed(dsn):
                        state += " (autovacuum had run)"
                    vacuum_s = await vacuum_analyze(dsn)
                    vacuumed = await search_all(kb, label + " after VACUUM", questions, broad, pg)
                finally:
                    await kb.aclose()
            finally:
                await drop_database(admin, name)
            backend = "Postgres (loopback)"
            results.append(
                KBResult(
                    backend,
                    state,
                    stats["chunks"],
                    stats["documents"],
                    add_s,
                    fresh[0],
                    fresh[3],
                    fresh[1],
                    add_meter,
                    fresh[2],
                )
            )
            report_kb(results[-1])
            results.append(
                KBResult(
                    backend,
                    f"after VACUUM ANALYZE ({vacuum_s:.1f} s)",
                    stats["chunks"],
                    stats["documents"],
                    add_s,
                    vacuumed[0],
                    vacuumed[3],
                    vacuumed[1],
                    add_meter,
                    vacuumed[2],
                )
            )
            report_kb(results[-1])
    return results, sqlite_files, matched


def report_kb(r: KBResult) -> None:
    print(
        f"  {r.backend}{', ' + r.state if r.state else ''}, {r.chunks} chunks: "
        f"add {r.documents / r.add_s:.0f} docs/s "
        f"{r.chunks / r.add_s:.0f} chunks/s; search p50 {pct(r.search_ms, 50):.2f} "
        f"p99 {pct(r.search_ms, 99):.2f} ms ({len(r.search_ms)} queries, {r.hits:.1f} hits); "
        f"broad p50 {pct(r.broad_ms, 50):.2f} p99 {pct(r.broad_ms, 99):.2f}; "
        f"own {r.search_meter.own:.2f} db {r.search_meter.extra:.2f} "
        f"other {r.search_meter.other:.2f}",
        flush=True,
    )


# ---------------------------------------------------------------- part 2: turn stages


async def lookup(order_id: str) -> dict[str, Any]:
    """Where an order is."""
    return {"order_id": order_id, "status": "shipped", "eta": "2026-12-03"}


NON_MATCHING_KEYWORDS = (
    ["refund", "invoice", "money back"],
    ["cancel", "unsubscribe"],
    ["password", "login", "sign in"],
    ["shipping", "delivery", "parcel"],
    ["warranty", "broken"],
)


def routing_rules() -> list[dict[str, Any]]:
    """10 rules: keywords and equals conditions alternating; only the last one matches."""
    rules: list[dict[str, Any]] = []
    for i in range(9):
        if i % 2 == 0:
            when: dict[str, Any] = {
                "field": "text",
                "keywords": NON_MATCHING_KEYWORDS[i // 2],
            }
        else:
            when = {"field": "metadata.plan", "equals": f"plan-{i}"}
        rules.append({"name": f"rule-{i + 1}", "when": when, "route": "other"})
    rules.append(
        {
            "name": "rule-10",
            "when": {"field": "text", "keywords": ["kettle", "descale"]},
            "route": "support",
        }
    )
    return rules


def scripted_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "providers": {},
        "scripted": True,
        "routes": {"default": {"providers": ["scripted"]}},
        "store": {"url": ""},
        "tools": {"builtin": False},
        "limits": {"max_active_turns": 10_000},
    }
    base.update(overrides)
    return Settings(**base)


class GCPauses:
    """The garbage collector's pauses while installed: (generation, ms) of each collection."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._started) * 1000))

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> str:
        parts = []
        for generation in (0, 1, 2):
            pauses = [ms for g, ms in self.pauses if g == generation]
            if pauses:
                parts.append(
                    f"generation {generation}: {len(pauses)} collections, max {max(pauses):.2f} ms"
                )
            else:
                parts.append(f"generation {generation}: none")
        return "; ".join(parts)


@dataclass
class Variant:
    label: str
    engine: Engine
    script: dict[str, Any]
    timings: list[dict[str, float]] = field(default_factory=list)


async def run_turn(engine: Engine, body: dict[str, Any], timeout_s: float) -> Done:
    async with asyncio.timeout(timeout_s):
        handle = await engine.submit(body)
        done = await handle.wait()
    if not isinstance(done, Done) or done.partial:
        raise AssertionError(f"turn did not complete: {done}")
    return done


async def part_turns(
    args: argparse.Namespace, kb_file: Path, questions: list[str]
) -> tuple[list[Variant], Meter, dict[str, Any]]:
    registry = ToolRegistry()
    registry.register(lookup, name="lookup")
    retriever = open_knowledge_base(f"sqlite+aiosqlite:///{kb_file}")
    call = {"name": "lookup", "arguments": ['{"order_id": "A-1234"}'], "call_id": "c1"}
    rule_routes = {
        "default": {"providers": ["scripted"]},
        "other": {"providers": ["scripted"]},
        "support": {"providers": ["scripted"]},
    }
    engines = {
        "plain": Engine(scripted_settings()),
        "retrieval": Engine(
            scripted_settings(
                routes={"default": {"providers": ["scripted"], "retrieval": {"top_k": 4}}}
            ),
            retriever=retriever,
        ),
        "tool": Engine(
            scripted_settings(routes={"default": {"providers": ["scripted"], "tools": ["lookup"]}}),
            tools=registry,
        ),
        "rules": Engine(scripted_settings(routes=rule_routes, routing={"rules": routing_rules()})),
    }
    variants = [
        Variant("plain route", engines["plain"], {"tokens": TOKENS}),
        Variant("retrieval (top 4, 1,000 chunks)", engines["retrieval"], {"tokens": TOKENS}),
        Variant(
            "one tool round",
            engines["tool"],
            {"tokens": [], "tool_calls": [call], "then": [{"tokens": TOKENS}]},
        ),
        Variant("10 routing rules", engines["rules"], {"tokens": TOKENS}),
    ]
    # Every prompt is a question of part 1 plus the word the last rule matches on.
    prompts = [f"{q[:-1]} for the kettle?" for q in questions]
    try:
        for engine in engines.values():
            await engine.open()
        for i in range(20):  # warm-up
            for v in variants:
                body = {"prompt": prompts[i], "metadata": {"plan": "free"}, "script": v.script}
                await run_turn(v.engine, body, TURN_TIMEOUT_S)

        async def measure() -> tuple[Meter, dict[str, Any]]:
            checks: dict[str, Any] = {}
            for v in variants:
                v.timings.clear()
            with GCPauses() as pauses:
                meter = Meter().start()
                deadline = time.monotonic() + 120
                for i in range(args.turns):
                    for v in variants:
                        body = {
                            "prompt": prompts[i % len(prompts)],
                            "metadata": {"plan": "free"},
                            "script": v.script,
                        }
                        done = await run_turn(v.engine, body, TURN_TIMEOUT_S)
                        v.timings.append(done.timings)
                        if v is variants[3]:
                            checks["rules_route"] = done.route
                        elif v is variants[1]:
                            checks.setdefault("retrieval_sources", []).append(len(done.sources))
                        elif v is variants[2]:
                            checks["tools_with_results"] = done.tools_with_results
                    if time.monotonic() > deadline:
                        break
                meter.stop()
            checks["gc"] = pauses.summary()
            return meter, checks

        meter, checks = await quiet_measure("turns", measure, lambda r: r[0])
    finally:
        for engine in engines.values():
            await engine.aclose()
        await retriever.aclose()
    return variants, meter, checks


def stage_values(v: Variant, key: str) -> list[float]:
    return [t[key] for t in v.timings if key in t]


# ---------------------------------------------------------------- part 3: local model


@dataclass
class LocalRow:
    label: str
    route: str
    first_token: list[float] = field(default_factory=list)
    retrieval: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    input_tokens: list[int] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    stream_per_token: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    sources: int = 0
    reruns: int = 0

    def add(self, done: Done) -> None:
        t = done.timings
        self.first_token.append(t["first_token"])
        self.total.append(t["total"])
        if "retrieval" in t:
            self.retrieval.append(t["retrieval"])
        usage = done.usage or {}
        self.input_tokens.append(int(usage.get("input_tokens", 0)))
        output = int(usage.get("output_tokens", 0))
        self.output_tokens.append(output)
        if output > 1:
            self.stream_per_token.append(t["stream"] / (output - 1))
        self.answers.append(done.answer)
        self.sources = len(done.sources)


async def part_local(args: argparse.Namespace, tmp: Path) -> tuple[list[LocalRow], Meter]:
    kb = open_knowledge_base(f"sqlite+aiosqlite:///{tmp / 'fixtures.db'}")
    added = await kb.add_paths([CORPUS], base_url="https://docs.example.com/")
    if not all(r.status == "added" for r in added):
        raise AssertionError(f"fixture corpus: {added}")
    settings = Settings(
        providers={"local": {"kind": "local", "n_threads": 2}},
        routes={
            "plain": {"providers": ["local"]},
            "rag2": {"providers": ["local"], "retrieval": {"top_k": 2}},
            "rag4": {"providers": ["local"], "retrieval": {"top_k": 4}},
        },
        default_route="plain",
        store={"url": ""},
        tools={"builtin": False},
    )
    warm = [
        LocalRow("no retrieval", "plain"),
        LocalRow("retrieval, top_k 2", "rag2"),
        LocalRow("retrieval, top_k 4", "rag4"),
    ]
    try:
        async with Engine(settings, retriever=kb) as engine:
            for row in warm:  # warm-up: one each, not counted
                body = {"prompt": QUESTION, "route": row.route, "max_tokens": 32}
                await run_turn(engine, {**body, "temperature": 0}, LOCAL_TURN_TIMEOUT_S)

            # llama.cpp's two threads need both cores: a turn during which other processes
            # used more than CONTAMINATED cores is run again (at most twice), after waiting
            # for quiet, while the part's time lasts.
            # llama.cpp keeps the last prompt evaluated and reuses its longest common prefix:
            # a top_k 4 prompt after a top_k 2 one (same first two passages) would skip most
            # of its work. Each retrieval turn follows a plain one (they share the preamble's
            # first line only), as a new question with other passages would; both plain turns
            # of a round count.
            rows = [LocalRow(row.label, row.route) for row in warm]
            plain, top2, top4 = rows
            meter = Meter()
            deadline = time.monotonic() + 120
            for _ in range(args.local_turns):
                for row in (plain, top2, plain, top4):
                    body = {
                        "prompt": QUESTION,
                        "route": row.route,
                        "max_tokens": 32,
                        "temperature": 0,
                    }
                    for attempt in (1, 2, 3):
                        await wait_quiet()
                        turn_meter = Meter().start()
                        done = await run_turn(engine, body, LOCAL_TURN_TIMEOUT_S)
                        turn_meter.stop()
                        if turn_meter.other <= CONTAMINATED or time.monotonic() > deadline:
                            break
                        if attempt < 3:
                            row.reruns += 1
                    row.add(done)
                    meter.add(turn_meter)
                if time.monotonic() > deadline:
                    break
    finally:
        await kb.aclose()
    return rows, meter


# ---------------------------------------------------------------- the section


@dataclass
class Results:
    kb: list[KBResult] = field(default_factory=list)
    pg_settings: str = ""
    pg_autovacuum: str = "?"
    matched: dict[int, tuple[float, float]] = field(default_factory=dict)
    n_questions: int = 0
    n_broad: int = 0
    turns: tuple[list[Variant], Meter, dict[str, Any]] | None = None
    local: tuple[list[LocalRow], Meter] | None = None


def kb_table(results: list[KBResult]) -> list[str]:
    lines = [
        "| backend | chunks (documents) | add: documents/s | chunks/s | add s "
        "| search p50 | p99 | max | broad p50 | broad p99 "
        "| search cores: ours / DB server | other cores: add / search |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        m = r.search_meter
        backend = f"{r.backend}, {r.state}" if r.state else r.backend
        if r.state.startswith("after"):  # the same knowledge base, searched again
            add = "| ″ | ″ | ″ "
            add_other = "″"
        else:
            add = f"| {r.documents / r.add_s:,.0f} | {r.chunks / r.add_s:,.0f} | {r.add_s:.1f} "
            add_other = f"{r.add_meter.other:.2f}"
        lines.append(
            f"| {backend} | {r.chunks:,} ({r.documents:,}) {add}| {pct(r.search_ms, 50):.2f} "
            f"| {pct(r.search_ms, 99):.2f} | {max(r.search_ms):.2f} "
            f"| {pct(r.broad_ms, 50):.2f} | {pct(r.broad_ms, 99):.2f} "
            f"| {m.own:.2f} / {m.extra:.2f} | {add_other} / {m.other:.2f} |"
        )
    return lines


def turns_table(variants: list[Variant]) -> list[str]:
    head = " | ".join(f"`{k}`" for k in STAGES)
    lines = [
        f"| turn (p50 / p99 ms) | turns | {head} | `total` max | `total` vs plain |",
        "|---|---:|" + "---:|" * (len(STAGES) + 2),
    ]
    plain = stage_values(variants[0], "total")
    for v in variants:
        cells = []
        for key in STAGES:
            values = stage_values(v, key)
            cells.append(f"{pct(values, 50):.3f} / {pct(values, 99):.3f}" if values else "-")
        total = stage_values(v, "total")
        diff = "-"
        if v is not variants[0]:
            diff = (
                f"{pct(total, 50) - pct(plain, 50):+.3f} / {pct(total, 99) - pct(plain, 99):+.3f}"
            )
        lines.append(
            f"| {v.label} | {len(v.timings)} | "
            + " | ".join(cells)
            + f" | {max(total):.2f} | {diff} |"
        )
    return lines


def local_table(rows: list[LocalRow]) -> list[str]:
    lines = [
        "| turn | runs | prompt tokens | `first_token` p50 ms (min-max) | `retrieval` p50 ms "
        "| answer tokens | decode ms/token | `total` p50 ms | sources | answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        answer = r.answers[0].replace("\n", " ").replace("|", "\\|")
        if len(answer) > 100:
            answer = answer[:97] + "..."
        if len(set(r.answers)) > 1:
            answer += f" ({len(set(r.answers))} different answers)"
        retrieval = fmt(statistics.median(r.retrieval)) if r.retrieval else "-"
        decode = fmt(statistics.median(r.stream_per_token), 1) if r.stream_per_token else "-"
        tokens = sorted(set(r.input_tokens))
        lines.append(
            f"| {r.label} | {len(r.first_token)} | {'/'.join(map(str, tokens))} "
            f"| {statistics.median(r.first_token):,.0f} ({min(r.first_token):,.0f}-"
            f"{max(r.first_token):,.0f}) | {retrieval} | {statistics.median(r.output_tokens):.0f} "
            f"| {decode} | {statistics.median(r.total):,.0f} | {r.sources} | {answer} |"
        )
    return lines


def reading(res: Results) -> list[str]:
    """Bullets computed from this run's numbers."""
    out: list[str] = []
    meters: list[tuple[str, Meter]] = []
    for r in res.kb:
        where = f"{r.chunks:,} chunks in {r.backend}" + (f" ({r.state})" if r.state else "")
        if not r.state.startswith("after"):
            meters.append((f"adding {where}", r.add_meter))
        meters.append((f"searching {where}", r.search_meter))
    if res.turns is not None:
        meters.append(("the scripted turns", res.turns[1]))
    if res.local is not None:
        meters.append(("the local-model turns", res.local[1]))
    busy = [f"{what} ({m.other:.2f} cores)" for what, m in meters if m.other > CONTAMINATED]
    if busy:
        out.append(
            f"- **Measured while other processes used more than {CONTAMINATED} core** (even "
            "after waiting and measuring again): " + ", ".join(busy) + ". Those numbers are "
            "inflated; rerun them on a quiet machine before comparing."
        )
    if res.kb:
        parts = []
        for r in res.kb:
            state = f" {r.state}" if r.state else ""
            parts.append(
                f"{r.backend}{state} at {r.chunks:,} chunks: search p50 "
                f"{pct(r.search_ms, 50):.2f} ms (broad: {pct(r.broad_ms, 50):.2f})"
            )
        out.append("- **Knowledge base**: " + "; ".join(parts) + ".")
        steady: dict[str, list[KBResult]] = {}
        for r in res.kb:
            if r.backend.startswith("SQLite") or r.state.startswith("after"):
                steady.setdefault(r.backend, []).append(r)
        for backend, rows in steady.items():
            if len(rows) == 2:
                small, large = rows
                growth = pct(large.search_ms, 50) / pct(small.search_ms, 50)
                broad_growth = pct(large.broad_ms, 50) / pct(small.broad_ms, 50)
                out.append(
                    f"- **{backend}{'' if backend.startswith('SQLite') else ', vacuumed'}: "
                    f"10x the chunks, {growth:.1f}x the search time** (p50; "
                    f"broad questions {broad_growth:.1f}x). A search scores every chunk that "
                    "holds any of the question's words (they are OR-ed), so its cost follows "
                    "the chunks matched: "
                    + "; ".join(
                        f"of {size:,}, a question matches {m[0]:,.0f}, a broad one {m[1]:,.0f}"
                        for size, m in sorted(res.matched.items())
                    )
                    + " (median)."
                )
    if res.turns is not None:
        variants = res.turns[0]
        plain = pct(stage_values(variants[0], "total"), 50)
        parts = []
        for v in variants[1:]:
            total = pct(stage_values(v, "total"), 50)
            parts.append(f"{v.label} {total - plain:+.2f} ms")
        out.append(
            "- **Turn overhead** (scripted, p50 of `total`): the plain route takes "
            f"{plain:.2f} ms from `submit` to `done`; " + ", ".join(parts) + "."
        )
    if res.local is not None:
        rows = res.local[0]
        ft0 = statistics.median(rows[0].first_token)
        in0 = statistics.median(rows[0].input_tokens)
        parts = []
        for r in rows[1:]:
            ft = statistics.median(r.first_token)
            extra = statistics.median(r.input_tokens) - in0
            per = f" (~{(ft - ft0) / extra:.2f} ms per added prompt token)" if extra > 0 else ""
            parts.append(
                f"{r.label}: +{extra:.0f} prompt tokens, first token {ft - ft0:+,.0f} ms{per}"
            )
        out.append(
            f"- **Local model**: without retrieval the first token comes after {ft0:,.0f} ms "
            f"({in0:.0f} prompt tokens); " + "; ".join(parts) + "."
        )
    return out


def section(args: argparse.Namespace, elapsed_s: float, res: Results) -> str:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    command = " ".join(["bench/turn_stages.py", *sys.argv[1:]]).strip()
    lines = [
        BEGIN,
        HEADING,
        "",
        f"Generated by `.venv/bin/python {command}` on {stamp} ({elapsed_s / 60:.1f} min); "
        "re-run it to rewrite this section (`--quick`: 1,000 chunks only and fewer turns, "
        "~1-2 min; `--no-write`: leave this file alone; `--parts kb,turns,local`: a subset).",
        "",
        "**The machine: 2 cores, shared by everything** (this script, the Postgres server, "
        "llama.cpp's two threads) and with other sessions (test suites, other benchmarks): "
        f"before each part the script waits (up to {QUIET_WAIT_S:.0f} s) for the machine to "
        "go quiet; *other* is the busy cores during a measurement that were neither this "
        "process nor (for Postgres) the server backends serving its database. Everything runs "
        "in one process through `tokenwire.Engine` and `open_knowledge_base`; Postgres is "
        f"reached over loopback{' (' + res.pg_settings + ')' if res.pg_settings else ''}.",
        "",
    ]
    if res.kb:
        lines += [
            "### Knowledge base: adding and searching",
            "",
            "Synthetic Markdown documents (seeded): a made-up language of 5,000 words with "
            "Zipf frequencies (the most common word is ~11% of the text, the 100 most common "
            "57%, much as in English), a `#` title and four `##` sections of 600-1,100 "
            "characters each, so four chunks per document. Each row adds them with `add_paths` "
            "to an empty knowledge base (one transaction per document; reading the files and "
            f"chunking included), then searches {res.n_questions} questions of 5-10 words one "
            "at a time, top 4 (20 warm-up searches first): a stop-word frame such as *how do "
            "I* around content words drawn with the documents' frequencies, leaving out the "
            f"{COMMON_WORDS} most common (as a real question, once its English stop words are "
            f"dropped, holds few very common words). *broad*: {res.n_broad} questions drawn "
            "from all words, so most hold one that is in nearly every chunk (a worst case). "
            "SQLite: a temp file (WAL, `synchronous=NORMAL`). Postgres: a throwaway database "
            "`tw_bench_<random>` on the local server, dropped afterwards, searched twice: "
            "right after adding (no planner statistics yet, new index entries still in the GIN "
            "index's pending list) and after `VACUUM ANALYZE` of the two tables, which "
            "autovacuum does on its own once it gets to them when it is on (it wakes every "
            f"minute by default; on this server it is {res.pg_autovacuum}). Search times in ms; "
            "″: the row above's knowledge base, searched again.",
            "",
            *kb_table(res.kb),
            "",
        ]
    if res.turns is not None:
        variants, meter, checks = res.turns
        n = len(variants[0].timings)
        lines += [
            "### Turn overhead per stage (scripted provider)",
            "",
            f"{n} turns per row, sequential, one row's turn after another's (four engines "
            "open side by side, so drift hits all alike; 20 warm-up turns each first). "
            'Settings: `scripted = true`, store off (`[store] url = ""`), a 20-token script '
            "with no delays. *retrieval*: the route has `retrieval = { top_k = 4 }` over the "
            "1,000-chunk SQLite knowledge base above (`Engine(retriever=...)`); *one tool "
            "round*: the route lists one async tool returning a 3-key dict, the script calls "
            "it once (no text first), then streams the 20 tokens; *10 routing rules*: the "
            "request names no route, 10 `[[routing.rules]]` alternate `keywords` (2-3 words "
            "each) and `equals` (`metadata.plan`) conditions, and only the last matches. Every "
            "row gets the same prompts: the questions above plus *for the kettle?* (the last "
            "rule's keyword). Values are `done.timings` in ms, p50 / p99 (nearest rank: with "
            f"{n} turns, p99 is the 3rd largest): `tool.lookup` is the call itself (arguments "
            "parsed and validated, the function awaited under its timeout), `tools` the wall "
            "time of the tool round (the `calling_tools` status, the call's task, its "
            "`tool.result` event); the model is then called again, which shows in "
            "`first_token` (no text came before the call). `first_token` and `total` count "
            "from `submit`.",
            "",
            *turns_table(variants),
            "",
            f"Cores during the turns: this process {meter.own:.2f}, other {meter.other:.2f}. "
            f"Garbage collections during them: {checks.get('gc')}. Checks: the rules chose "
            f"route `{checks.get('rules_route')}`; the tool turns reported "
            f"`tools_with_results = {checks.get('tools_with_results')}`; the retrieval turns "
            f"had {statistics.median(checks.get('retrieval_sources', [0])):.0f} sources "
            "(median).",
            "",
        ]
    if res.local is not None:
        rows, meter = res.local
        lines += [
            "### Passages in the prompt of the local model",
            "",
            "The default provider (Gemma 3 270M Q4_K_M through llama.cpp, 2 threads, n_ctx "
            "2048), store off. The question *" + QUESTION + "*, max_tokens 32, temperature 0 "
            "(greedy), without retrieval and with a retrieval route over the fixture corpus "
            "`tests/fixtures/kb` in a SQLite knowledge base (top_k 2, then top_k 4; `max_chars` "
            "3000, the default), after one warm-up each. Runs go *plain, top_k 2, plain, top_k "
            "4* in turn: llama.cpp reuses the longest common prefix of the previous prompt it "
            "evaluated, and the provider puts the passages in the prompt's first paragraph, so "
            "a prompt that follows a plain one is evaluated from its second line on (as for a "
            "new question with other passages), while top_k 4 right after top_k 2 (the same "
            "first passages) would be nearly free. *prompt tokens*: `done.usage.input_tokens` "
            "(the few-shot transcript the provider builds, plus the passages); *first_token*: "
            "`submit` → first visible text; *decode*: `stream` / (answer tokens - 1); "
            "*answer*: the first run's `done.answer`.",
            "",
            *local_table(rows),
            "",
            "Cores during the kept runs: this process (llama.cpp's threads included) "
            f"{meter.own:.2f}, other {meter.other:.2f}. llama.cpp's two threads need both "
            "cores (one busy core slows a token several-fold), so each run waits for a quiet "
            f"machine first and is run again (at most twice) when other processes used more "
            f"than {CONTAMINATED} core during it: {sum(r.reruns for r in rows)} reruns.",
            "",
        ]
    lines += ["### What the numbers say", "", *reading(res), END]
    return "\n".join(lines)


# ---------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    parts = set(args.parts.split(","))
    corpus = Corpus(SEED)
    questions = corpus.questions(args.queries, seed=SEED + 1, skip=COMMON_WORDS)
    broad = corpus.questions(BROAD_QUESTIONS, seed=SEED + 2)
    res = Results(n_questions=len(questions), n_broad=len(broad))
    with tempfile.TemporaryDirectory(prefix="tw-turn-stages-") as name:
        tmp = Path(name)
        sqlite_files: dict[str, Path] = {}
        if "kb" in parts:
            res.kb, sqlite_files, res.matched = await part_kb(args, corpus, tmp, questions, broad)
            if args.postgres:
                res.pg_settings, res.pg_autovacuum = await postgres_settings(args.postgres)
        if "turns" in parts:
            kb_file = sqlite_files.get("1000")
            if kb_file is None:  # part kb not run: build the 1,000-chunk file alone
                docs = tmp / "docs-1000"
                corpus.write_documents(docs, 1000 // CHUNKS_PER_DOC, seed=SEED + 1000)
                kb_file = tmp / "kb-1000.db"
                kb = open_knowledge_base(f"sqlite+aiosqlite:///{kb_file}")
                try:
                    await kb.add_paths([docs], base_url="https://docs.example.com/")
                finally:
                    await kb.aclose()
            res.turns = await part_turns(args, kb_file, questions)
            for v in res.turns[0]:
                print(
                    f"  {v.label}: "
                    + ", ".join(
                        f"{k} {pct(vals, 50):.3f}/{pct(vals, 99):.3f}"
                        for k in STAGES
                        if (vals := stage_values(v, k))
                    ),
                    flush=True,
                )
            print(f"  gc: {res.turns[2].get('gc')}", flush=True)
        if "local" in parts:
            res.local = await part_local(args, tmp)
            for row in res.local[0]:
                print(
                    f"  {row.label}: first_token {statistics.median(row.first_token):.0f} ms, "
                    f"input {row.input_tokens}, answer {row.answers[0]!r}",
                    flush=True,
                )
    return section(args, time.perf_counter() - started, res)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 chunks, fewer turns")
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--parts", default="kb,turns,local")
    parser.add_argument("--turns", type=int, default=None, help="scripted turns per row (200)")
    parser.add_argument("--local-turns", type=int, default=None, help="local runs per row (5)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    arguments = parser.parse_args()
    if arguments.turns is None:
        arguments.turns = 50 if arguments.quick else 200
    if arguments.local_turns is None:
        arguments.local_turns = 2 if arguments.quick else 5
    text = asyncio.run(main(arguments))
    if not arguments.no_write:
        write_section(text, BEGIN, END)
    print(text)

"""A Stop during a long prompt on the local model: how soon the model is free, and how long the
next user waits for a first token (``bench/local.py --prefill-stop``).

In-process, through :class:`tokenwire.providers.local.LocalProvider` (its worker thread, its
real stop path: the consumer closes the stream). Per repetition and per setting of
``prefill_chunk_tokens``: a turn with a ~1,300-token prompt starts; 0.3 s after its ``Begin``
(sent just before the prompt's evaluation starts: a user who pressed Stop shortly after Send),
the stream is closed and a short turn is submitted at once. Measured from the Stop: the long
turn's end (the model free) and the short turn's first text. Also, per setting: the short
prompt's TTFT with the model idle, and a long prompt's uninterrupted prefill (its TTFT), which
is what chunking costs. ``prefill_chunk_tokens = 2048`` (more than any prompt) hands the
whole prompt to llama.cpp's own evaluation, as the provider did before chunking: a Stop cannot
interrupt it.
Every long prompt differs from the others right after the shared preamble, so no run reuses
another's evaluated prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from measure import wait_quiet, write_section

BEGIN, END = "<!-- local-prefill-stop:begin -->", "<!-- local-prefill-stop:end -->"
CHUNKS = (64, 128, 2048)
LEFT_AFTER_S = 0.3


def long_question(rep: int, chunk: int) -> str:
    notes = " ".join(
        f"Note {i}: the river near town {i} flows north past {i} old mills." for i in range(60)
    )
    return f"Run {rep}-{chunk}. {notes} Which town has the most mills?"


async def first_text(provider, question: str) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """(monotonic time of the first text chunk, the turn's record); the turn runs to its end."""
    from tokenwire.providers.base import GenerationRequest, Message, TextChunk

    request = GenerationRequest(messages=(Message("user", question),), max_tokens=16)
    first = float("nan")
    async for chunk in provider.stream(request):
        if isinstance(chunk, TextChunk) and first != first:
            first = time.monotonic()
    return first, next(t for t in provider.turns if t.request is request)


async def stop_during_prefill(provider, rep: int, chunk: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from tokenwire.providers.base import GenerationRequest, Message

    request = GenerationRequest(
        messages=(Message("user", long_question(rep, chunk)),), max_tokens=16
    )
    stream = provider.stream(request)
    await anext(stream)  # Begin: the worker goes on to evaluate the prompt
    turn = next(t for t in provider.turns if t.request is request)
    await asyncio.sleep(LEFT_AFTER_S)
    stopped_at = time.monotonic()
    await stream.aclose()
    first, _ = await first_text(provider, "Say hello.")
    await asyncio.to_thread(turn.ended.wait, 120)
    return {
        "free_s": turn.ended_at - stopped_at,
        "next_ttft_s": first - stopped_at,
        "evaluated": turn.prompt_evaluated,
        "prompt": turn.prompt_tokens,
        "stopped_in_prefill": float(turn.prefill_stopped),
    }


async def run(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    from tokenwire.config import LocalProviderSettings
    from tokenwire.providers.local import LocalProvider

    results: dict[int, dict[str, float]] = {}
    for chunk in CHUNKS:
        provider = LocalProvider(
            "local", LocalProviderSettings(n_threads=2, prefill_chunk_tokens=chunk)
        )
        await provider.start()
        try:
            await first_text(provider, "Say hello.")  # warm-up
            idle, stops, prefills = [], [], []
            for rep in range(args.reps):
                t0 = time.monotonic()
                first, _ = await first_text(provider, "Say hello.")
                idle.append(first - t0)
                stops.append(await stop_during_prefill(provider, rep, chunk))
                t0 = time.monotonic()
                first, turn = await first_text(provider, long_question(rep + 100, chunk))
                prefills.append((first - t0, turn.prompt_tokens))
        finally:
            await provider.aclose()
        med = statistics.median
        results[chunk] = {
            "idle_ttft_s": med(idle),
            "free_s": med(s["free_s"] for s in stops),
            "free_max_s": max(s["free_s"] for s in stops),
            "next_ttft_s": med(s["next_ttft_s"] for s in stops),
            "next_ttft_max_s": max(s["next_ttft_s"] for s in stops),
            "evaluated": med(s["evaluated"] for s in stops),
            "prompt": med(s["prompt"] for s in stops),
            "stopped_in_prefill": sum(s["stopped_in_prefill"] for s in stops),
            "prefill_s": med(p[0] for p in prefills),
            "prefill_tps": med(p[1] / p[0] for p in prefills),
        }
    return results


def measure_prefill_stop(args: argparse.Namespace) -> None:
    busy = wait_quiet(args.wait_quiet)
    results = asyncio.run(run(args))
    after = wait_quiet(0)
    lines = [
        BEGIN,
        "## Local model: a Stop during a long prompt",
        "",
        f"Generated by `{' '.join(['bench/local.py', *sys.argv[1:]])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Gemma 3 270M Q4_K_M, n_ctx 2048, n_threads 2, "
        f"in-process LocalProvider. {args.reps} repetitions per setting: a ~1,300-token prompt, "
        f"Stop {LEFT_AFTER_S} s after its `Begin`, then a short turn at once "
        "(times from the Stop; medians, max in brackets). `2048` = the whole prompt in "
        "llama.cpp's own evaluation, as before chunking. Machine busy: "
        f"{busy:.2f} cores before, {after:.2f} after (other sessions share the 2 cores: "
        "noisy).",
        "",
        "| prefill_chunk_tokens | stops that cut the prompt | prompt tokens evaluated | "
        "model free after Stop s | next user's TTFT after Stop s | idle TTFT s | "
        "uninterrupted prefill s (tokens/s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for chunk, r in results.items():
        lines.append(
            f"| {chunk} | {r['stopped_in_prefill']:.0f} of {args.reps} | "
            f"{r['evaluated']:.0f} of {r['prompt']:.0f} | {r['free_s']:.2f} "
            f"({r['free_max_s']:.2f}) | {r['next_ttft_s']:.2f} ({r['next_ttft_max_s']:.2f}) | "
            f"{r['idle_ttft_s']:.2f} | {r['prefill_s']:.2f} ({r['prefill_tps']:.0f}) |"
        )
    lines.append(END)
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(section, BEGIN, END)

from __future__ import annotations

import asyncio
import threading

from tokenwire import Done, Engine, Event
from tokenwire.protocol import TextDelta

from .conftest import scripted_settings


async def test_subscribers_see_lifecycle_events_in_order() -> None:
    async with Engine(scripted_settings()) as engine:
        seen: list[str] = []

        async def record(event: Event) -> None:
            seen.append(event.type)

        sub = engine.hooks.subscribe(record, types={"start", "text.done", "done", "usage"})
        handle = await engine.submit({"prompt": "x", "script": {"tokens": ["a", "b"]}})
        await handle.wait()
        await sub.drained()
    assert seen == ["start", "text.done", "usage", "done"]
    assert sub.delivered == 4 and sub.dropped == 0


async def test_a_raising_subscriber_never_breaks_the_stream() -> None:
    async with Engine(scripted_settings()) as engine:

        def explode(event: Event) -> None:
            raise RuntimeError("consumer bug")

        sub = engine.hooks.subscribe(explode)
        handle = await engine.submit({"prompt": "x", "script": {"tokens": ["a", "b"]}})
        terminal = await handle.wait()
        await sub.drained()
    assert isinstance(terminal, Done) and terminal.answer == "ab"
    assert sub.failed == terminal.seq  # every event of the turn reached it, and each raised
    assert sub.delivered == 0


async def test_a_blocked_subscriber_drops_events_and_the_stream_goes_on() -> None:
    release = threading.Event()
    async with Engine(scripted_settings(coalesce={"window_ms": 0})) as engine:

        def stuck(event: Event) -> None:
            release.wait(30)  # a handler that blocks its thread

        sub = engine.hooks.subscribe(stuck, queue_size=2)
        tokens = [f"t{i} " for i in range(50)]
        handle = await engine.submit({"prompt": "x", "script": {"tokens": tokens, "delay_ms": 0.1}})
        terminal = await handle.wait()
        assert isinstance(terminal, Done) and terminal.answer == "".join(tokens).strip()
        assert sub.dropped > 0
        assert engine.metrics.hook_drops._value.get() == sub.dropped  # type: ignore[attr-defined]
        release.set()
        await sub.drained()


async def test_an_async_subscriber_that_hangs_only_hurts_itself() -> None:
    async with Engine(scripted_settings()) as engine:
        forever = asyncio.Event()
        started = asyncio.Event()

        async def hang(event: Event) -> None:
            started.set()
            await forever.wait()

        sub = engine.hooks.subscribe(hang, types={"text.delta"}, queue_size=1)
        handle = await engine.submit(
            {"prompt": "x", "script": {"tokens": ["a", "b", "c"], "delay_ms": 1}}
        )
        events = [e async for e in handle.events()]
        await started.wait()
    assert events[-1].type == "done"
    assert any(isinstance(e, TextDelta) for e in events)
    assert sub.delivered == 0

"""The thread → asyncio bridge: ordering, backpressure, close, errors. No sleeps: threads and the
loop synchronize through events only; timeouts are only guards against a hang."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from tokenwire.providers.bridge import Bridge

GUARD_S = 10.0


def start_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


async def join(thread: threading.Thread) -> None:
    # join with a timeout in the helper thread: a producer stuck for good fails the test
    # instead of hanging the loop's executor shutdown.
    await asyncio.to_thread(thread.join, GUARD_S)
    assert not thread.is_alive(), "the producer thread is still blocked"


async def test_items_arrive_in_order_then_iteration_ends() -> None:
    bridge: Bridge[int] = Bridge(maxsize=4)

    def produce() -> None:
        for i in range(100):
            assert bridge.put(i)
        bridge.finish()

    thread = start_thread(produce)
    received = [item async for item in bridge]
    await join(thread)
    assert received == list(range(100))


async def test_producer_blocks_when_full_and_resumes_when_drained() -> None:
    bridge: Bridge[int] = Bridge(maxsize=2)
    attempting_third = threading.Event()
    third_done = threading.Event()

    def produce() -> None:
        assert bridge.put(1)
        assert bridge.put(2)
        attempting_third.set()
        assert bridge.put(3)  # must block: two items already wait
        third_done.set()
        bridge.finish()

    thread = start_thread(produce)
    assert await asyncio.to_thread(attempting_third.wait, GUARD_S)
    # The producer is at (or inside) the third put; it cannot complete until we take one.
    assert not await asyncio.to_thread(third_done.wait, 0.2)
    assert await bridge.get() == 1
    assert await asyncio.to_thread(third_done.wait, GUARD_S)
    assert [item async for item in bridge] == [2, 3]
    await join(thread)


async def blocked_producer(bridge: Bridge[int]) -> tuple[threading.Thread, list[bool]]:
    """A producer that fills a maxsize=1 bridge, then blocks on its second put (nobody reads);
    returns once it is about to block. ``results`` collects what its puts returned."""
    about_to_block = threading.Event()
    results: list[bool] = []

    def produce() -> None:
        results.append(bridge.put(1))
        about_to_block.set()
        results.append(bridge.put(2))
        results.append(bridge.put(3))

    thread = start_thread(produce)
    assert await asyncio.to_thread(about_to_block.wait, GUARD_S)
    return thread, results


async def test_close_unblocks_a_blocked_producer_and_later_puts_fail() -> None:
    bridge: Bridge[int] = Bridge(maxsize=1)
    thread, results = await blocked_producer(bridge)
    bridge.close()
    await join(thread)
    assert results == [True, False, False]
    assert bridge.closed
    with pytest.raises(StopAsyncIteration):
        await bridge.get()  # buffered items are dropped: the consumer said it is gone


async def test_producer_exception_is_reraised_after_buffered_items() -> None:
    bridge: Bridge[str] = Bridge(maxsize=8)

    def produce() -> None:
        bridge.put("a")
        bridge.finish(ValueError("boom"))

    thread = start_thread(produce)
    received: list[str] = []
    with pytest.raises(ValueError, match="boom"):
        async for item in bridge:
            received.append(item)
    await join(thread)
    assert received == ["a"]


async def test_waiting_consumer_is_woken_by_a_later_put() -> None:
    bridge: Bridge[str] = Bridge(maxsize=8)
    getter = asyncio.create_task(bridge.get())
    await asyncio.sleep(0)  # let the getter start waiting (a yield, not a timed wait)
    assert not getter.done()
    thread = start_thread(lambda: bridge.put("late"))
    assert await asyncio.wait_for(getter, GUARD_S) == "late"
    await join(thread)


async def test_cancelled_get_leaves_the_bridge_usable() -> None:
    bridge: Bridge[str] = Bridge(maxsize=8)
    getter = asyncio.create_task(bridge.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    thread = start_thread(lambda: (bridge.put("x"), bridge.finish()))
    assert [item async for item in bridge] == ["x"]
    await join(thread)


async def test_abort_unblocks_the_producer_and_raises_in_the_consumer() -> None:
    bridge: Bridge[int] = Bridge(maxsize=1)
    thread, results = await blocked_producer(bridge)
    bridge.abort(RuntimeError("shutting down"))
    await join(thread)
    assert results == [True, False, False]
    with pytest.raises(RuntimeError, match="shutting down"):
        await bridge.get()


async def test_finish_after_close_is_ignored_and_put_after_finish_is_an_error() -> None:
    closed: Bridge[int] = Bridge()
    closed.close()
    closed.finish(ValueError("ignored"))
    with pytest.raises(StopAsyncIteration):
        await closed.get()

    finished: Bridge[int] = Bridge()
    finished.finish()
    with pytest.raises(RuntimeError):
        finished.put(1)


def test_maxsize_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            Bridge(maxsize=0, loop=loop)
    finally:
        loop.close()

"""In-process hooks: application code subscribes to turn events without touching the stream.

Each subscriber gets its own bounded queue and its own worker: an async handler runs in a task,
a plain function in a dedicated thread, so a handler that raises, blocks or crawls only hurts
itself. When its queue is full the event is dropped for that subscriber and counted; the stream
never waits. Subscribe to protocol event types (``start``, ``text.delta``, ``usage``,
``text.done``, ``done``, ``error``, ...) or to everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from ..protocol import Event

logger = logging.getLogger("tokenwire.hooks")

Handler = Callable[[Event], Awaitable[None] | None]


class Subscription:
    """One subscriber: its counters say what it saw, what it dropped and what it failed on."""

    def __init__(
        self, hooks: Hooks, handler: Handler, types: frozenset[str] | None, queue_size: int
    ) -> None:
        self._hooks = hooks
        self.handler = handler
        self.types = types
        self.name = getattr(handler, "__qualname__", repr(handler))
        self.delivered = 0
        self.dropped = 0
        self.failed = 0
        self._queue: asyncio.Queue[Event] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def offer(self, event: Event) -> None:
        if self.types is not None and event.type not in self.types:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            self._hooks.on_drop(self)
            return
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._work(), name=f"tokenwire-hook-{self.name}"
            )

    async def drained(self) -> None:
        """Wait until every queued event was handled (for tests and orderly shutdown)."""
        await self._idle.wait()

    def unsubscribe(self) -> None:
        self._hooks.remove(self)
        if self._task is not None:
            self._task.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _work(self) -> None:
        is_async = inspect.iscoroutinefunction(self.handler)
        if not is_async:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"hook-{self.name}")
        loop = asyncio.get_running_loop()
        while True:
            event = await self._queue.get()
            try:
                if is_async:
                    result = self.handler(event)
                    if result is not None:
                        await result
                else:
                    await loop.run_in_executor(self._executor, self.handler, event)
                self.delivered += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed += 1
                logger.exception("hook %s failed on %s event", self.name, event.type)
            if self._queue.empty():
                self._idle.set()


class Hooks:
    """The event-emitter. ``offer`` never blocks and never raises."""

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        on_drop: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._queue_size = queue_size
        self._subs: list[Subscription] = []
        self._on_drop = on_drop

    def subscribe(
        self,
        handler: Handler,
        *,
        types: Iterable[str] | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Call ``handler`` with every event (or those of ``types``) of every turn."""
        sub = Subscription(
            self,
            handler,
            frozenset(types) if types is not None else None,
            queue_size or self._queue_size,
        )
        self._subs.append(sub)
        return sub

    @property
    def active(self) -> bool:
        """True when anyone is subscribed (lets the hot path skip offering to nobody)."""
        return bool(self._subs)

    def remove(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def offer(self, event: Event) -> None:
        for sub in self._subs:
            sub.offer(event)

    def on_drop(self, sub: Subscription) -> None:
        if self._on_drop is not None:
            self._on_drop(sub)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.unsubscribe()

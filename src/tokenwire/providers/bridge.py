"""A bounded hand-off from one producer thread to one asyncio consumer.

Blocking producers (the llama.cpp generation loop, a synchronous SDK) run in a thread; the
engine consumes on the event loop. :class:`Bridge` carries items between them::

    bridge: Bridge[str] = Bridge(maxsize=8)          # on the event loop

    def produce() -> None:                           # in the thread
        try:
            for token in tokens():
                if not bridge.put(token):            # the consumer is gone: stop working
                    return
        except BaseException as exc:
            bridge.finish(exc)                       # re-raised by the consumer
        else:
            bridge.finish()

    async for token in bridge: ...                   # on the event loop; bridge.close() when done

Backpressure: :meth:`put` blocks while ``maxsize`` items wait, so a slow consumer slows the
producer instead of growing memory. :meth:`close` is the consumer's way out: it unblocks a
blocked producer, discards what was buffered, and makes every later :meth:`put` return False.

The producer wakes the loop with ``loop.call_soon_threadsafe`` only when the consumer is actually
waiting, so a fast stream costs one lock round-trip per item, not one loop callback.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Bridge(Generic[T]):
    """A bounded buffer between a producer thread and a consumer on one event loop.

    Create it on the consumer's event loop (or pass ``loop``). Thread side: :meth:`put`,
    :meth:`finish`. Loop side: :meth:`get` / ``async for``, :meth:`close`. All methods are safe to
    call from any thread; only the loop side may await.
    """

    def __init__(self, maxsize: int = 16, *, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._items: deque[T] = deque()
        # One lock guards every field below; the condition lets a producer wait for room.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._error: BaseException | None = None
        self._closed = False

    # -- producer (any thread) -------------------------------------------------------------

    def put(self, item: T) -> bool:
        """Hand ``item`` to the consumer, blocking while the buffer is full.

        Returns True once the item is buffered, False (at once, or as soon as it happens while
        blocked) if the consumer closed the bridge: the producer should stop. Raises
        ``RuntimeError`` after :meth:`finish`.
        """
        with self._room:
            if self._finished and not self._closed:
                raise RuntimeError("put() after finish()")
            while len(self._items) >= self._maxsize and not self._closed:
                self._room.wait()
            if self._closed:
                return False
            self._items.append(item)
            return self._wake_locked()

    def finish(self, exc: BaseException | None = None) -> None:
        """End the stream: the consumer drains what is buffered, then stops (re-raising ``exc``
        if given). Only the first call counts; after :meth:`close` it does nothing."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._error = exc
            self._wake_locked()

    @property
    def closed(self) -> bool:
        """True once the consumer called :meth:`close`: the producer may stop early."""
        return self._closed

    def _wake_locked(self) -> bool:
        waiter, self._waiter = self._waiter, None
        if waiter is None:
            return True
        try:
            self._loop.call_soon_threadsafe(_release, waiter)
        except RuntimeError:
            # The loop is closed, so nobody will ever consume: behave as if closed.
            self._finished = self._closed = True
            self._items.clear()
            self._room.notify_all()
            return False
        return True

    # -- consumer (the event loop) ----------------------------------------------------------

    async def get(self) -> T:
        """The next item, waiting for one if needed.

        Raises ``StopAsyncIteration`` when the producer finished (after every buffered item was
        returned) or the bridge was closed, and re-raises the producer's exception if
        :meth:`finish` (or :meth:`abort`) was given one.
        """
        while True:
            with self._room:
                if self._items:
                    item = self._items.popleft()
                    self._room.notify()
                    return item
                if self._finished:
                    if self._error is not None:
                        raise self._error
                    raise StopAsyncIteration
                waiter = self._loop.create_future()
                self._waiter = waiter
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None

    def close(self) -> None:
        """The consumer is gone: drop buffered items, unblock a blocked :meth:`put` and make
        later ones return False. Idempotent; safe from any thread."""
        self._shut(None)

    def abort(self, exc: BaseException) -> None:
        """End the stream now from outside both sides (e.g. a shutdown): buffered items are
        dropped, the producer's :meth:`put` returns False, the consumer's next :meth:`get`
        raises ``exc``. Does nothing if the stream already ended."""
        self._shut(exc)

    def _shut(self, exc: BaseException | None) -> None:
        with self._room:
            if not self._finished:
                self._finished = True
                self._error = exc
            self._closed = True
            self._items.clear()
            self._room.notify_all()
            self._wake_locked()

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

"""The gateway: accepts turns, enqueues them for the workers, relays any turn's events.

A gateway holds no state a client depends on: a turn's events, its owner and its signals are
all in Redis, so a client that reconnects to another gateway resumes there. What it keeps is a
local copy of the streams it is serving (:class:`~.reader.RedisLogReader`), which readers
follow exactly as in embedded mode.

Accepting a turn: the request is validated here (a bad request is a 4xx at once, never a
queued job that fails later), its ``meta`` (tenant, route, disconnect policy) is written and
the job added to the queue in one transaction; a Redis that cannot take it makes the request a
503 with ``Retry-After`` at once. Stopping a turn: the ``cancel`` key (for a worker that has
not picked the job yet) and a message on the control channel (for the one running it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..bus import UnknownStream
from ..engine.idempotency import holds_visible
from ..engine.request import Overloaded, RequestError, TurnRequest
from ..protocol import Done, Error, Event, Reason, decode_event, event_to_dict, is_terminal
from .active_set import sweep
from .connection import UNAVAILABLE, connect
from .ending import end_stream, lost_terminal
from .keys import Keys
from .reader import TAIL_BLOCK_MS, RedisLogReader
from .scripts import ADOPT_LOST, ENQUEUE, REKEY
from .tenant_turns import sweep_tenant
from .writer import RedisLogWriter

if TYPE_CHECKING:
    from ..engine import ActiveTurn, Engine, TurnHandle

logger = logging.getLogger("tokenwire.cluster")

RETRY_AFTER_S = 2.0
"""What a client is told to wait when Redis cannot take a new turn."""

_QUEUED, _CLUSTER_FULL, _SHARE_FULL = 1, 0, -1
"""What :data:`~.scripts.ENQUEUE` answers."""


class RemoteTurn:
    """A turn running on some worker, as a :class:`~tokenwire.engine.engine.TurnControl`."""

    def __init__(self, gateway: Gateway, stream_id: str, meta: dict[str, str]) -> None:
        self._gateway = gateway
        self.stream_id = stream_id
        self._route = meta.get("route", "")
        self._background = meta.get("background") == "1"
        self._on_disconnect = meta.get("on_disconnect", "cancel")
        self._keyed = meta.get("keyed") == "1"
        """Started with an Idempotency-Key: its originator may come back (:meth:`rejoin`)."""
        self._readers = 0
        self._grace: asyncio.TimerHandle | None = None

    @property
    def route(self) -> str:
        return self._route

    @property
    def background(self) -> bool:
        return self._background

    @property
    def terminal(self) -> Done | Error | None:
        try:
            terminal = self._gateway.reader.terminal(self.stream_id)
        except UnknownStream:
            return None
        assert terminal is None or isinstance(terminal, Done | Error)
        return terminal

    @property
    def done(self) -> bool:
        return self.terminal is not None

    def attach(self) -> None:
        self._readers += 1
        self._gateway.count_reader(self.stream_id, +1)

    def detach(self, *, originator: bool) -> None:
        self._readers = max(0, self._readers - 1)
        self._gateway.count_reader(self.stream_id, -1)
        if self._gateway.closing:
            return  # this gateway is going away, not the client: it resumes on another one
        if not originator or self._background or self.done:
            return
        if self._keyed:
            self._gateway.spawn(self._originator_left())
            return
        self._client_gone()

    def rejoin(self) -> None:
        """The originator is back (a retry by its Idempotency-Key, on any gateway): until that
        reader leaves too, the first connection's departure does not apply ``on_disconnect``."""
        self._gateway.spawn(self._gateway.count_originators(self.stream_id, +1))

    async def _originator_left(self) -> None:
        if await self._gateway.count_originators(self.stream_id, -1) >= 0:
            return  # the same client still reads it through a retry of its request
        if not self.done:
            self._client_gone()

    def _client_gone(self) -> None:
        """The client that started the turn is gone: the request's ``on_disconnect``."""
        if self._on_disconnect == "continue":
            if self._grace is None:
                grace_s = self._gateway.engine.settings.limits.disconnect_grace_s
                loop = asyncio.get_running_loop()
                self._grace = loop.call_later(grace_s, self._grace_expired)
            return
        self.stop(Reason.CLIENT_GONE)

    def _grace_expired(self) -> None:
        self._grace = None
        if not self.done:
            self._gateway.spawn(self._gateway.stop_if_unread(self.stream_id))

    def stop(self, reason: Reason) -> bool:
        if self.done:
            return False
        self._gateway.spawn(self._gateway.signal_cancel(self.stream_id, reason))
        return True

    async def wait(self) -> Done | Error:
        follower = self._gateway.reader.follower(self.stream_id)
        while not follower.finished:
            follower.take()
            if not follower.finished:
                await follower.wait()
        terminal = self.terminal
        assert terminal is not None
        return terminal


class Gateway:
    """The gateway role of an :class:`~tokenwire.engine.Engine` (``role="gateway"``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        settings = engine.settings
        self.settings = settings.redis
        self.keys = Keys(self.settings.prefix)
        self.redis = connect(self.settings)
        self._tail_redis = connect(self.settings, block_s=TAIL_BLOCK_MS / 1000)
        limits = settings.limits
        self.reader = RedisLogReader(
            self.redis,
            self._tail_redis,
            self.settings,
            retention_s=limits.stream_retention_s,
            max_events=limits.max_stream_events,
            max_finished=limits.max_retained_streams,
            max_stream_bytes=limits.max_stream_bytes,
            max_retained_bytes=limits.max_retained_bytes,
            on_error=self._error,
            on_lost=self._end_lost,
            check_s=max(1.0, self.settings.worker_lease_s),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self._writer: RedisLogWriter | None = None
        self._adopt = self.redis.register_script(ADOPT_LOST)
        self._enqueue = self.redis.register_script(ENQUEUE)
        self._rekey = self.redis.register_script(REKEY)

    async def open(self) -> None:
        """Nothing must be reachable at start: a gateway started before Redis serves 503s
        until it is, then recovers by itself."""

    async def aclose(self) -> None:
        self.closing = True
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.settings.op_timeout_s)
        await self.reader.aclose()
        if self._writer is not None:
            await self._writer.aclose()
        await self.redis.aclose()
        await self._tail_redis.aclose()

    async def _end_lost(self, stream_id: str, events: list[Event]) -> None:
        """A turn Redis lost whole, job included (it restarted without its data): end it from
        this gateway's copy of its events, so its readers get a terminal event that says so."""
        token = f"gateway:{secrets.token_hex(8)}"
        adopted = await self._adopt(
            keys=[self.keys.run(stream_id), self.keys.meta(stream_id)], args=[token]
        )
        if not adopted:
            return  # its worker is writing it again, or another gateway ended it
        if self._writer is None:
            limits = self.engine.settings.limits
            self._writer = RedisLogWriter(
                self.redis,
                self.settings,
                retention_s=limits.stream_retention_s,
                max_events=limits.max_stream_events,
                on_error=self._error,
            )
        logger.warning("stream %s: Redis lost this turn; ending it", stream_id)
        terminal = lost_terminal(
            stream_id,
            events,
            Reason.LOG_UNAVAILABLE,
            "the event log lost this turn (Redis restarted without its data); send it again",
        )
        self._writer.claim(stream_id, token, written=0)
        end_stream(self._writer, stream_id, events, terminal, rewrite=True)
        await self._writer.flushed(stream_id)
        self._writer.forget(stream_id)

    def _unavailable(self, op: str) -> Overloaded:
        """What a request that needs Redis gets when Redis cannot answer: 503, Retry-After."""
        self._error(op)
        logger.warning("%s: Redis is unavailable; answering 503", op)
        return Overloaded(
            "the event log (Redis) is unavailable; try again shortly", retry_after_s=RETRY_AFTER_S
        )

    def _error(self, op: str) -> None:
        self.engine.metrics.redis_errors.labels(op).inc()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- accepting -------------------------------------------------------------------------

    async def submit(
        self,
        request: TurnRequest,
        *,
        tenant: str | None,
        idempotency_key: str | None,
        seen_seq: int = 0,
    ) -> TurnHandle:
        """:meth:`Engine.submit <tokenwire.engine.Engine.submit>` on a gateway, retries by
        Idempotency-Key included (the same rule as ``engine.idempotency``, from Redis)."""
        engine = self.engine
        if engine._closing:
            raise Overloaded("the server is shutting down", retry_after_s=5)
        # Every check a request can fail, here (the worker routes it again, by the same rules).
        plan = engine._plan(request, tenant, engine.route_selector.choose(request, tenant))
        if request.conversation_id is not None and engine.store is not None:
            await self._check_conversation(request.conversation_id, tenant)
        stream_id = plan.stream_id
        body = request.model_dump(mode="json", exclude_none=True)
        try:
            if idempotency_key is not None:
                joined = await self._idempotent(idempotency_key, tenant, body, stream_id, seen_seq)
                if joined is not None:
                    return await self._handle(joined, tenant, joined_by_key=True)
            meta = {
                "tenant": tenant or "",
                "route": plan.route,
                "background": "1" if plan.background else "0",
                "on_disconnect": plan.on_disconnect,
                "keyed": "1" if idempotency_key is not None else "0",
                "created_at": repr(time.time()),
            }
            job = {
                b"stream_id": stream_id.encode(),
                b"tenant": (tenant or "").encode(),
                b"request": orjson.dumps(body),
                b"meta": orjson.dumps(meta),
            }
            queued = await self._admit(stream_id, tenant, job, meta)
            if queued != _QUEUED:
                engine.metrics.rejected.labels("overloaded").inc()
                if idempotency_key is not None:
                    # Refused, not started: a retry with this key must be able to start it.
                    await self.redis.delete(self.keys.idempotency(tenant, idempotency_key))
                if queued == _SHARE_FULL:
                    raise Overloaded(
                        f"this tenant has {self._share(tenant)} turns queued or running in the "
                        "cluster; its share is reached"
                    )
                limit = engine.settings.limits.max_active_turns
                raise Overloaded(f"{limit} turns queued or running in the cluster; the limit")
            await self.reader.track(stream_id)
        except UNAVAILABLE:
            raise self._unavailable("submit") from None
        from ..engine import TurnHandle

        return TurnHandle(RemoteTurn(self, stream_id, meta), self.reader)

    def _share(self, tenant: str | None) -> int:
        """The tenant's share of the cluster's turns (0: none, turns without a tenant)."""
        per_tenant = self.engine.shares.per_tenant
        return per_tenant if tenant is not None and per_tenant is not None else 0

    async def _admit(
        self, stream_id: str, tenant: str | None, job: dict[bytes, bytes], meta: dict[str, str]
    ) -> int:
        """Admit and enqueue the turn in one step (:data:`~.scripts.ENQUEUE`): ``_QUEUED``,
        ``_CLUSTER_FULL`` or ``_SHARE_FULL``. A tenant is refused only once its set holds no
        orphan: a turn whose terminal was lost must not hold its slot for good."""
        args = [
            self.engine.settings.limits.max_active_turns,
            self._share(tenant),
            tenant or "",
            stream_id,
            *(item for pair in job.items() for item in pair),
            "--",
            *(item for pair in meta.items() for item in pair),
        ]
        keys = [
            self.keys.jobs,
            self.keys.meta(stream_id),
            self.keys.tenant_turns(tenant),
            self.keys.tenants,
        ]
        queued = int(await self._enqueue(keys=keys, args=args))
        if queued == _SHARE_FULL and tenant is not None:
            if await sweep_tenant(self.redis, self.keys, tenant):
                queued = int(await self._enqueue(keys=keys, args=args))
        return queued

    async def _check_conversation(self, conversation_id: str, tenant: str | None) -> None:
        store = self.engine.store
        assert store is not None
        found = None
        if len(conversation_id) <= 64:
            found = await store.conversation_context(conversation_id, tenant=tenant, max_turns=0)
        if found is None:
            raise RequestError(
                "conversation_not_found", f"no conversation {conversation_id!r}", status=404
            )

    async def _idempotent(
        self, key: str, tenant: str | None, body: dict[str, Any], stream_id: str, seen_seq: int
    ) -> str | None:
        """The stream an earlier request with this key started (None: this one is the first,
        or restarts the key's turn: the key now names ``stream_id``), cluster-wide, retries
        racing included."""
        fingerprint = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        value = f"{stream_id} {fingerprint}"
        ttl = max(1, int(self.engine.settings.limits.stream_retention_s))
        redis_key = self.keys.idempotency(tenant, key)
        if await self.redis.set(redis_key, value, nx=True, ex=ttl):
            return None
        known = await self.redis.get(redis_key)
        if known is None:
            joined: str | None = await self._idempotent(key, tenant, body, stream_id, seen_seq)
            return joined  # the key expired in between: this request is the first again
        known_stream, _, known_fingerprint = bytes(known).decode().partition(" ")
        if known_fingerprint != fingerprint:
            raise RequestError(
                "idempotency_conflict", "this Idempotency-Key was used with a different request"
            )
        if await self._restarts(known_stream, seen_seq):
            if await self._rekey(keys=[redis_key], args=[bytes(known), value, ttl]):
                return None
            # A racing retry restarted it first: join that one.
            again: str | None = await self._idempotent(key, tenant, body, stream_id, seen_seq)
            return again
        return known_stream

    async def _restarts(self, stream_id: str, seen_seq: int) -> bool:
        """``engine.idempotency.restarts`` from what Redis holds of the turn: stopped because
        its originator left (its ``cancel`` key says ``client_gone``, and its terminal, if
        written, is that stop's), and the retry holds nothing visible of it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.cancel(stream_id))
            pipe.xrevrange(self.keys.events(stream_id), count=1)
            pipe.xrange(self.keys.events(stream_id), "-", f"{max(seen_seq, 0)}-0")
            cancel, last, seen = await pipe.execute()
        if cancel != Reason.CLIENT_GONE.value.encode():
            return False
        terminal = decode_event(last[0][1][b"e"]) if last else None
        if (
            terminal is not None
            and is_terminal(terminal)
            and not (isinstance(terminal, Done) and terminal.reason is Reason.CLIENT_GONE)
        ):
            return False  # the stop came too late: the turn had ended on its own
        if seen_seq <= 0:
            return True
        held = [decode_event(fields[b"e"]) for _id, fields in seen]
        if not held or held[0].seq != 1:
            return False  # what it saw is no longer known: resume (which says so), not guess
        return not holds_visible(held, seen_seq)

    # -- serving existing turns ------------------------------------------------------------

    async def lookup(self, stream_id: str, *, tenant: str | None) -> TurnHandle:
        return await self._handle(stream_id, tenant)

    async def _handle(
        self, stream_id: str, tenant: str | None, *, joined_by_key: bool = False
    ) -> TurnHandle:
        """A handle on any turn of the cluster; ``joined_by_key``: for a retry by its
        Idempotency-Key, which reads it as its originator."""
        from ..engine import TurnHandle

        meta = await self._meta(stream_id, tenant)
        try:
            await self.reader.track(stream_id)
        except UNAVAILABLE:
            raise self._unavailable("lookup") from None
        turn = RemoteTurn(self, stream_id, meta)
        if joined_by_key:
            return TurnHandle(turn, self.reader, joined=True, rejoin=turn.rejoin)
        return TurnHandle(turn, self.reader)

    async def _meta(self, stream_id: str, tenant: str | None) -> dict[str, str]:
        try:
            raw = await self.redis.hgetall(self.keys.meta(stream_id))
        except UNAVAILABLE:
            raise self._unavailable("lookup") from None
        meta = {k.decode(): v.decode() for k, v in raw.items()}
        if not meta or meta.get("tenant", "") != (tenant or ""):
            raise UnknownStream(stream_id)
        return meta

    async def cancel(self, stream_id: str, reason: Reason, *, tenant: str | None) -> bool:
        handle = await self.lookup(stream_id, tenant=tenant)
        if handle.done:
            return False
        await self.signal_cancel(stream_id, reason)
        return True

    async def signal_cancel(self, stream_id: str, reason: Reason) -> None:
        """Stop a turn wherever it runs: the key for a worker yet to pick it up, the message
        for the one running it."""
        ttl = max(1, int(self.engine.settings.limits.stream_retention_s))
        message = orjson.dumps({"action": "cancel", "stream_id": stream_id, "reason": reason})
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.cancel(stream_id), reason.value, ex=ttl)
                pipe.publish(self.keys.control, message)
                await pipe.execute()
        except UNAVAILABLE as exc:
            self._error("cancel")
            logger.warning("stream %s: the cancel could not be sent (%r)", stream_id, exc)

    async def remember(self, key: str, value: str) -> None:
        ttl = max(1, int(self.engine.settings.limits.stream_retention_s))
        try:
            await self.redis.set(f"{self.keys.prefix}:kv:{key}", value, ex=ttl)
        except UNAVAILABLE:
            self._error("remember")

    async def recall(self, key: str) -> str | None:
        try:
            value = await self.redis.get(f"{self.keys.prefix}:kv:{key}")
        except UNAVAILABLE:
            self._error("recall")
            return None
        return None if value is None else bytes(value).decode()

    async def count_originators(self, stream_id: str, delta: int) -> int:
        """Add ``delta`` to the turn's :meth:`~.keys.Keys.originators` and return it; -1 when
        Redis cannot answer (a client that left then counts as gone, as without a key)."""
        key = self.keys.originators(stream_id)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, delta)
                pipe.expire(key, max(60, int(self.engine.settings.limits.stream_retention_s)))
                count, _ = await pipe.execute()
        except UNAVAILABLE:
            self._error("originators")
            return -1
        return int(count)

    def count_reader(self, stream_id: str, delta: int) -> None:
        self.spawn(self._count_reader(stream_id, delta))

    async def _count_reader(self, stream_id: str, delta: int) -> None:
        key = self.keys.readers(stream_id)
        with contextlib.suppress(*UNAVAILABLE):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, delta)
                pipe.expire(key, max(60, int(self.engine.settings.limits.stream_retention_s)))
                await pipe.execute()

    async def stop_if_unread(self, stream_id: str) -> None:
        """After an originator's grace period: stop the turn unless a reader follows it on
        any gateway."""
        try:
            raw = await self.redis.get(self.keys.readers(stream_id))
        except UNAVAILABLE:
            return
        if int(raw or 0) <= 0:
            await self.signal_cancel(stream_id, Reason.CLIENT_GONE)

    async def status(self, stream_id: str, *, tenant: str | None) -> dict[str, Any] | None:
        """The live view, or None when Redis no longer holds the turn (the store may)."""
        try:
            meta = await self._meta(stream_id, tenant)
        except UnknownStream:
            return None
        try:
            last = await self.redis.xrevrange(self.keys.events(stream_id), count=1)
        except UNAVAILABLE:
            raise self._unavailable("status") from None
        event = decode_event(last[0][1][b"e"]) if last else None
        if isinstance(event, Done | Error):
            if isinstance(event, Done):
                state = "incomplete" if event.partial else "completed"
            else:
                state = "failed"
            return {
                "stream_id": stream_id,
                "state": state,
                "routes": None,
                "last_seq": event.seq,
                "terminal": event_to_dict(event),
            }
        created_at = float(meta.get("created_at", "0") or 0)
        return {
            "stream_id": stream_id,
            "state": "active",
            "route": meta.get("route"),
            "model": None,
            "created_at": created_at,
            "age_s": round(time.time() - created_at, 3),
            "tokens": None,
            "last_seq": event.seq if event is not None else 0,
        }

    async def active(self, *, tenant: str | None) -> list[ActiveTurn]:
        from ..engine import ActiveTurn

        try:
            raw = await self.redis.hgetall(self.keys.active)
        except UNAVAILABLE:
            raise self._unavailable("active") from None
        now = time.time()
        turns = []
        for stream_id, value in raw.items():
            info = orjson.loads(value)
            if info.get("tenant") != (tenant or ""):
                continue
            turns.append(
                ActiveTurn(
                    stream_id=stream_id.decode(),
                    route=info["route"],
                    model=info.get("model"),
                    age_s=round(now - info["created_at"], 3),
                    tokens=0,
                    last_seq=0,
                )
            )
        try:
            # What a lost worker or an expired turn left in the list is not running.
            orphans = await sweep(self.redis, self.keys, (t.stream_id for t in turns))
        except UNAVAILABLE:
            raise self._unavailable("active") from None
        turns = [t for t in turns if t.stream_id not in orphans]
        return sorted(turns, key=lambda t: -t.age_s)

"""The worker: takes turns from the Redis job queue and runs them.

Jobs are entries of one Redis Stream read by a consumer group, so each job goes to one worker.
A worker holds its jobs by renewing them every ``worker_heartbeat_s`` (:data:`~.scripts.RENEW`
resets their idle time); a worker that stops (killed, frozen, cut off) stops renewing, and after
``worker_lease_s`` another worker's ``XAUTOCLAIM`` takes its jobs over. Taking a turn over first
makes the new worker the turn's only writer (:data:`~.scripts.CLAIM` changes the fencing
token, so the old worker, should it wake up, can write nothing more), then looks at what the
stream holds:

- its terminal event: the old worker finished but died before acknowledging; acknowledge.
- nothing visible (``start``, ``status``): run the turn again, continuing the same stream
  (the client sees one stream, no second ``start``, no gap in ``seq``).
- visible output: end it honestly, ``done`` with ``partial: true``, reason ``worker_lost``,
  and the text already streamed as its answer.

A job is acknowledged (and deleted) only once the turn's terminal event is in Redis. Cancels
arrive on the control channel (and as a key, for a job not picked up yet); a worker that was
cut off from the channel re-reads the keys of its turns when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
from redis.exceptions import ResponseError

from ..config import Settings
from ..engine import Engine, RequestError, TurnHandle
from ..protocol import (
    Done,
    Error,
    Event,
    Reason,
    decode_event,
    is_terminal,
)
from ..protocol.retry import backoff_delay
from ..providers import Provider
from .active_set import mark_active, sweep
from .budget import SharedBudget
from .connection import UNAVAILABLE, connect
from .ending import end_stream, lost_terminal, shown
from .keys import Keys
from .scheduling import SharedScheduler
from .scripts import CLAIM, RENEW
from .tenant_turns import sweep_tenants
from .writer import RedisLogWriter

logger = logging.getLogger("tokenwire.cluster")

READ_BLOCK_MS = 1000
MAX_DELIVERIES = 4
"""A job handed to this many workers, each lost while it ran nothing visible, is ended with an
``error`` instead of a fifth try: a turn that kills its workers must not kill them all."""


@dataclass(slots=True)
class _Job:
    entry_id: bytes
    stream_id: str
    handle: TurnHandle | None = None


class Worker:
    """Runs turns from Redis until :meth:`stop`. ``concurrency``: turns at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int = 8,
        name: str | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        if not settings.redis.url:
            raise ValueError("a worker needs [redis] url (or --redis URL)")
        self.settings = settings
        self.redis_settings = settings.redis
        self.keys = Keys(settings.redis.prefix)
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.redis = connect(settings.redis, block_s=READ_BLOCK_MS / 1000)
        self._control_redis = connect(settings.redis, block_s=READ_BLOCK_MS / 1000)
        limits = settings.limits
        self.writer = RedisLogWriter(
            self.redis,
            settings.redis,
            retention_s=limits.stream_retention_s,
            max_events=limits.max_stream_events,
            max_stream_bytes=limits.max_stream_bytes,
            on_unwritable=self._unwritable,
            on_error=self._error,
        )
        self.engine = Engine(settings, role="worker", log=self.writer, providers=providers)
        self.engine.may_record = self._owns
        self._share_limits()
        self._claim = self.redis.register_script(CLAIM)
        self._renew = self.redis.register_script(RENEW)
        self._jobs: dict[str, _Job] = {}
        self._fenced: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the engine is open and the worker takes turns."""

    def _share_limits(self) -> None:
        """Hosted providers' limits hold for the whole cluster (one budget in Redis). A local
        model's stay per worker: each worker runs its own copy of the model."""
        lease_s = self.redis_settings.worker_lease_s * 2
        for name, cfg in self.settings.providers.items():
            if cfg.kind == "local" or name not in self.engine.schedulers:
                continue
            budget = SharedBudget(
                self.redis,
                name,
                concurrency=cfg.concurrency,
                rpm=cfg.rpm,
                tpm=cfg.tpm,
                prefix=self.redis_settings.prefix,
                lease_s=lease_s,
                poll_max_s=0.25,
            )
            self.engine.schedulers[name] = SharedScheduler(
                budget,
                holder=self.name,
                on_error=self._error,
                concurrency=cfg.concurrency,
                rpm=cfg.rpm,
                tpm=cfg.tpm,
                aging_s=self.settings.scheduler.aging_s,
                keepalive_s=lease_s / 3,
            )

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the engine (load the model) and work until :meth:`stop`; then end the
        turns in flight (reason ``shutdown``) and acknowledge them."""
        await self.engine.open()
        loops = [
            asyncio.ensure_future(self._consume()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self._control()),
        ]
        logger.info("worker %s: taking turns (%d at once)", self.name, self.concurrency)
        self.ready.set()
        try:
            await self._stopping.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.engine.aclose()  # every turn in flight ends (shutdown)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=self.redis_settings.op_timeout_s * 4)
            await self.writer.aclose()
            await self.redis.aclose()
            await self._control_redis.aclose()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def running(self) -> int:
        return len(self._jobs)

    def _error(self, op: str) -> None:
        self.engine.metrics.redis_errors.labels(op).inc()

    def _owns(self, stream_id: str) -> bool:
        return stream_id not in self._fenced

    def _unwritable(self, stream_id: str, reason: Reason) -> None:
        if reason is Reason.WORKER_LOST:
            self._fenced.add(stream_id)
        turn = self.engine._turns.get(stream_id)
        if turn is not None:
            turn.stop(reason)

    # -- taking jobs -----------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(self.keys.jobs, self.keys.group, id="0", mkstream=True)

    async def _consume(self) -> None:
        failures = 0
        group_ready = False
        while True:
            free = self.concurrency - len(self._jobs)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            try:
                if not group_ready:
                    await self._ensure_group()
                    group_ready = True
                answer = await self.redis.xreadgroup(
                    self.keys.group,
                    self.name,
                    {self.keys.jobs: ">"},
                    count=free,
                    block=READ_BLOCK_MS,
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    group_ready = False  # Redis lost the group (a restart without persistence)
                    continue
                self._error("consume")
                failures += 1
                logger.warning("worker %s: reading jobs failed: %r", self.name, exc)
                await asyncio.sleep(backoff_delay(failures - 1, initial_s=0.05, max_s=1.0))
                continue
            except UNAVAILABLE as exc:
                self._error("consume")
                failures += 1
                if failures == 1:
                    logger.warning("worker %s: Redis unavailable (%r); retrying", self.name, exc)
                await asyncio.sleep(backoff_delay(failures - 1, initial_s=0.05, max_s=1.0))
                continue
            failures = 0
            for _key, entries in cast(Any, answer) or ():
                for entry_id, fields in entries:
                    self._take(entry_id, fields, takeover=False)

    def _take(self, entry_id: bytes, fields: Mapping[bytes, bytes], *, takeover: bool) -> None:
        stream_id = fields[b"stream_id"].decode()
        if stream_id in self._jobs:
            return
        self._jobs[stream_id] = _Job(entry_id, stream_id)
        task = asyncio.ensure_future(self._run_job(entry_id, fields, takeover=takeover))
        self._tasks.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                # Unacknowledged, so another worker (or this one) takes it over after the
                # lease; the error is this process's to report.
                logger.error(
                    "stream %s: running its job failed", stream_id, exc_info=task.exception()
                )
            self._tasks.discard(task)
            self._jobs.pop(stream_id, None)
            self._slot_free.set()

        task.add_done_callback(finished)

    async def _heartbeat(self) -> None:
        """Renew this worker's jobs; take over the jobs of workers that stopped renewing."""
        lease_ms = int(self.redis_settings.worker_lease_s * 1000)
        loop = asyncio.get_running_loop()
        swept_at = loop.time()
        while True:
            await asyncio.sleep(self.redis_settings.worker_heartbeat_s)
            try:
                if loop.time() - swept_at >= self.redis_settings.worker_lease_s:
                    # Orphans in the active set (see active_set.py), once a lease: as often as
                    # a lost worker's turns can change hands.
                    swept_at = loop.time()
                    listed = await self.redis.hkeys(self.keys.active)
                    await sweep(self.redis, self.keys, (s.decode() for s in listed))
                    # And the tenants' shares (see tenant_turns.py), for the same reason.
                    await sweep_tenants(self.redis, self.keys)
                held = {job.entry_id: job for job in self._jobs.values()}
                if held:
                    taken = await self._renew(
                        keys=[self.keys.jobs],
                        args=[self.keys.group, self.name, *held],
                    )
                    for entry_id in cast(list[bytes], taken):
                        # Another worker has it now: this one must stop writing at once.
                        self._unwritable(held[entry_id].stream_id, Reason.WORKER_LOST)
                free = self.concurrency - len(self._jobs)
                if free > 0:
                    claimed = await self.redis.xautoclaim(
                        self.keys.jobs,
                        self.keys.group,
                        self.name,
                        min_idle_time=lease_ms,
                        start_id="0-0",
                        count=free,
                    )
                    for entry_id, fields in cast(Any, claimed)[1]:
                        if fields:
                            self._take(entry_id, fields, takeover=True)
            except UNAVAILABLE:
                # NOGROUP included: the consumer loop creates the group again.
                self._error("heartbeat")

    # -- one job ---------------------------------------------------------------------------

    async def _run_job(
        self, entry_id: bytes, fields: Mapping[bytes, bytes], *, takeover: bool
    ) -> None:
        stream_id = fields[b"stream_id"].decode()
        tenant = fields[b"tenant"].decode() or None
        request: dict[str, Any] = orjson.loads(fields[b"request"])
        keys = self.keys
        token = f"{self.name}:{secrets.token_hex(6)}"
        try:
            deliveries = await self._deliveries(entry_id) if takeover else 1
            written = int(await self._claim(keys=[keys.run(stream_id)], args=[token]))
            events: list[Event] = []
            if written:
                entries = await self.redis.xrange(keys.events(stream_id))
                events = [decode_event(f[b"e"]) for _id, f in cast(Any, entries)]
            cancel = await self.redis.get(keys.cancel(stream_id))
        except UNAVAILABLE:
            # Not acknowledged: it stays pending, and is taken over once Redis is back.
            self._error("claim")
            return
        meta = orjson.loads(fields.get(b"meta", b"{}"))
        self.writer.claim(stream_id, token, prior=events, meta=meta)
        try:
            if events and is_terminal(events[-1]):
                self.engine.metrics.takeovers.labels("finished").inc()
                await self._ack(entry_id, stream_id)
                return
            if shown(events):
                self.engine.metrics.takeovers.labels("worker_lost").inc()
                await self._end_lost(stream_id, events, request, tenant)
            elif deliveries > MAX_DELIVERIES:
                # Every worker that ran it was lost: the turn itself is the likely cause (a
                # crash, a model that runs out of memory). Running it again would lose the
                # next worker too.
                self.engine.metrics.takeovers.labels("given_up").inc()
                logger.error("stream %s: lost %d workers; not run again", stream_id, deliveries - 1)
                message = f"the turn was lost with {deliveries - 1} workers; it is not run again"
                error = Error(code=Reason.WORKER_LOST.value, message=message, retryable=False)
                end_stream(self.writer, stream_id, events, error)
            else:
                if takeover:
                    self.engine.metrics.takeovers.labels("rerun").inc()
                await self._run_turn(stream_id, events, request, tenant, cancel)
            if await self.writer.flushed(stream_id):
                await self._ack(entry_id, stream_id)
        finally:
            self.writer.forget(stream_id)
            self._fenced.discard(stream_id)

    async def _deliveries(self, entry_id: bytes) -> int:
        """How many times the job was handed to a worker (this hand-over included)."""
        pending = await self.redis.xpending_range(
            self.keys.jobs, self.keys.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _run_turn(
        self,
        stream_id: str,
        prior: list[Event],
        request: dict[str, Any],
        tenant: str | None,
        cancel: bytes | None,
    ) -> None:
        try:
            handle = await self.engine.start_job(
                request, tenant=tenant, stream_id=stream_id, prior=prior
            )
        except RequestError as exc:
            # Valid at the gateway, not here (a conversation deleted meanwhile, a config that
            # differs): the stream still ends, with an error.
            error = Error(code=exc.code, message=exc.message, retryable=False, attempts=0)
            end_stream(self.writer, stream_id, prior, error)
            return
        if cancel is not None:
            # Before anything is awaited: the turn has not begun, so it never calls upstream.
            handle.cancel(Reason(cancel.decode()))
        job = self._jobs.get(stream_id)
        if job is not None:
            job.handle = handle
        await self._mark_active(stream_id, tenant, handle)
        try:
            await handle.wait()
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await self.redis.hdel(self.keys.active, stream_id)

    async def _mark_active(self, stream_id: str, tenant: str | None, handle: TurnHandle) -> None:
        info: dict[str, Any] = {"tenant": tenant or "", "route": handle.route, "worker": self.name}
        turn = self.engine._turns.get(stream_id)
        if turn is not None:
            info |= {"model": turn.model, "created_at": turn.created_at}
        with contextlib.suppress(*UNAVAILABLE):
            await mark_active(self.redis, self.keys, stream_id, info)

    async def _end_lost(
        self, stream_id: str, prior: list[Event], request: dict[str, Any], tenant: str | None
    ) -> None:
        """The lost worker had shown text: end the turn with what was streamed."""
        terminal = lost_terminal(
            stream_id, prior, Reason.WORKER_LOST, "the worker running the turn was lost"
        )
        ended = end_stream(self.writer, stream_id, prior, terminal)
        if isinstance(ended, Done):
            with contextlib.suppress(Exception):
                await self.engine.record_terminal(
                    stream_id,
                    ended,
                    started={
                        "conversation_id": request.get("conversation_id"),
                        "request": request,
                        "route": ended.route,
                        "model": ended.model,
                        "tenant": tenant,
                    },
                    conversation_id=request.get("conversation_id"),
                    metadata=request.get("metadata") or {},
                )

    async def _ack(self, entry_id: bytes, stream_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.keys.jobs, self.keys.group, entry_id)
                pipe.xdel(self.keys.jobs, entry_id)
                await pipe.execute()
        except UNAVAILABLE:
            # Left pending: whoever takes it over finds the terminal event and acknowledges.
            self._error("ack")

    # -- signals ---------------------------------------------------------------------------

    async def _control(self) -> None:
        failures = 0
        while True:
            try:
                async with self._control_redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.control)
                    if failures:
                        await self._recheck_cancels()  # signals sent while cut off
                    failures = 0
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=READ_BLOCK_MS / 1000
                        )
                        if message is not None:
                            self._signal(message["data"])
            except UNAVAILABLE:
                self._error("control")
                failures += 1
                await asyncio.sleep(backoff_delay(failures - 1, initial_s=0.05, max_s=1.0))

    def _signal(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            reason = Reason(message.get("reason", "cancelled"))
        except (orjson.JSONDecodeError, ValueError):
            logger.warning("worker %s: ignoring a malformed control message", self.name)
            return
        if message.get("action") == "cancel":
            turn = self.engine._turns.get(str(message.get("stream_id")))
            if turn is not None:
                turn.stop(reason)

    async def _recheck_cancels(self) -> None:
        stream_ids = list(self._jobs)
        if not stream_ids:
            return
        reasons = await self.redis.mget([self.keys.cancel(s) for s in stream_ids])
        for stream_id, reason in zip(stream_ids, reasons, strict=True):
            if reason is not None:
                turn = self.engine._turns.get(stream_id)
                if turn is not None:
                    turn.stop(Reason(reason.decode()))


async def serve_worker(worker: Worker, *, host: str, port: int) -> None:
    """Run ``worker`` with ``GET /healthz`` and ``GET /metrics`` on ``host:port`` until
    SIGTERM or SIGINT; then end its turns in flight (``shutdown``) and exit."""
    import signal

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "worker": worker.name, "running": worker.running})

    async def metrics(_request: Request) -> Response:
        return Response(worker.engine.metrics.render(), media_type="text/plain; version=0.0.4")

    app = Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the worker's own handlers stop it: turns end before the HTTP side

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    http = asyncio.ensure_future(server.serve())
    run = asyncio.ensure_future(worker.run())

    async def announce() -> None:
        await worker.ready.wait()
        gc.freeze()  # as `tokenwire serve` does: startup's objects never need collecting
        print(f"tokenwire worker {worker.name} ready (http://{host}:{port})", flush=True)

    announcer = asyncio.ensure_future(announce())
    try:
        await run
    finally:
        announcer.cancel()
        server.should_exit = True
        await http

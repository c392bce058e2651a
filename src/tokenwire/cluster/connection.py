"""Redis connections with bounded waits: a command that gets no answer fails after the
configured timeout instead of hanging a turn or a reader forever."""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config import RedisSettings

RedisClient: TypeAlias = Any
"""A ``redis.asyncio.Redis`` client. Typed loosely on purpose: redis-py annotates replies as
unions for every decoding mode, and these clients always answer raw ``bytes``."""

MAX_CONNECTIONS = 1000
"""Connections per client at most (each process has a few clients)."""

UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, RedisError, OSError)
"""What a Redis that cannot do what is asked raises: down, restarting, paused, or refusing
(an ``OOM`` reply under ``noeviction``, a replica that is read-only): all an outage to the
caller, never a crash of the loop that met it."""

__all__ = ["UNAVAILABLE", "RedisClient", "RedisError", "connect"]


def connect(settings: RedisSettings, *, block_s: float = 0.0) -> RedisClient:
    """A client of ``settings.url``. ``block_s``: the longest BLOCK this client's commands use
    (a blocking read must not be mistaken for a dead server).

    The pool is a blocking one: past ``max_connections`` (``?max_connections=`` in the URL,
    else :data:`MAX_CONNECTIONS`) a command waits up to ``op_timeout_s`` for a free connection
    instead of failing at once, so a burst of turns queues briefly rather than getting 503s."""
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=MAX_CONNECTIONS,
        timeout=settings.op_timeout_s,
        socket_timeout=settings.op_timeout_s + block_s,
        socket_connect_timeout=settings.op_timeout_s,
        health_check_interval=0,
        retry_on_timeout=False,
        # No silent retries inside the client: every caller has its own policy (fail fast
        # with 503, retry with backoff, give up after log_unavailable_s).
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the pool

"""The Redis keys of a deployment, in one place.

Every key of one turn carries the stream id in a hash tag (``tw:{<stream_id>}:...``), so a turn's
keys land in one Redis Cluster slot and one script may touch them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "tw"
    group: str = "workers"
    """The consumer group of the workers on :attr:`jobs`."""

    def events(self, stream_id: str) -> str:
        """The turn's events: a Redis Stream, entry id ``<seq>-0``, field ``e`` = the JSON."""
        return f"{self.prefix}:{{{stream_id}}}:events"

    def run(self, stream_id: str) -> str:
        """The turn's run: a hash with ``owner`` (the fencing token of the worker allowed to
        write) and ``head`` (the seq of the last event written)."""
        return f"{self.prefix}:{{{stream_id}}}:run"

    def meta(self, stream_id: str) -> str:
        """What a gateway needs to serve the turn: tenant, route, background, on_disconnect."""
        return f"{self.prefix}:{{{stream_id}}}:meta"

    def cancel(self, stream_id: str) -> str:
        """Set when the turn is to stop, for a worker that picks it up after the signal."""
        return f"{self.prefix}:{{{stream_id}}}:cancel"

    def readers(self, stream_id: str) -> str:
        """How many readers follow the turn, across gateways (``on_disconnect: continue``)."""
        return f"{self.prefix}:{{{stream_id}}}:readers"

    def originators(self, stream_id: str) -> str:
        """Retries by Idempotency-Key reading the turn, less originators that left (absent: 0,
        the first client alone). Below 0, the client is gone: ``on_disconnect`` applies."""
        return f"{self.prefix}:{{{stream_id}}}:originators"

    def idempotency(self, tenant: str | None, key: str) -> str:
        return f"{self.prefix}:idem:{tenant or '-'}:{key}"

    def tenant_turns(self, tenant: str | None) -> str:
        """A set: the stream ids of the tenant's turns queued or running, cluster-wide (its
        fair share, ``[limits] max_active_turns_per_tenant``). Added to by the enqueue script,
        removed from by the script that appends a turn's terminal event, whoever writes it;
        orphans are swept (:mod:`.tenant_turns`). Turns without a tenant are not counted."""
        return f"{self.prefix}:tenant:{tenant or '-'}:turns"

    @property
    def tenants(self) -> str:
        """A set: the tenants whose :meth:`tenant_turns` may hold something, for the sweep."""
        return f"{self.prefix}:tenants"

    @property
    def jobs(self) -> str:
        """The job queue: a Redis Stream read by the consumer group :attr:`group`."""
        return f"{self.prefix}:jobs"

    @property
    def control(self) -> str:
        """The Pub/Sub channel of signals to workers (cancel)."""
        return f"{self.prefix}:control"

    @property
    def active(self) -> str:
        """A hash: stream id → the running turn's summary, for ``GET /v1/streams?state=active``."""
        return f"{self.prefix}:active"

    def poke(self, reader_id: str) -> str:
        """A gateway's own stream, written to wake its blocked tail when it follows a new turn."""
        return f"{self.prefix}:poke:{reader_id}"

"""What a gateway's reader and a worker's writer share: a local copy of each stream they serve,
which answers the read side of :class:`~tokenwire.bus.EventLog` in this process."""

from __future__ import annotations

from ..bus import MemoryEventLog, MemoryFollower
from ..protocol import Event


class LocalCopy:
    """The read side of an event log, served from ``self.local``."""

    local: MemoryEventLog

    def terminal(self, stream_id: str) -> Event | None:
        return self.local.terminal(stream_id)

    def head(self, stream_id: str) -> int:
        return self.local.head(stream_id)

    def follower(self, stream_id: str, after_seq: int = 0) -> MemoryFollower:
        return self.local.follower(stream_id, after_seq)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self.local

"""Event logs: every event of a stream is appended before any reader sees it."""

from .log import EventLog, Follower, ResumeUnavailable, UnknownStream, follow
from .memory import MemoryEventLog, MemoryFollower

__all__ = [
    "EventLog",
    "Follower",
    "MemoryEventLog",
    "MemoryFollower",
    "ResumeUnavailable",
    "UnknownStream",
    "follow",
]

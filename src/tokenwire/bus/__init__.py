"""Event logs: every event of a stream is appended before any reader sees it."""

from .log import EventLog, ResumeUnavailable, UnknownStream
from .memory import MemoryEventLog

__all__ = ["EventLog", "MemoryEventLog", "ResumeUnavailable", "UnknownStream"]

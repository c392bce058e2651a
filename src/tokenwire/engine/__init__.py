"""Runs turns: route → generate (retries, fallback, deadlines, coalescing) → terminal event."""

from .engine import ActiveTurn, Engine, TurnHandle
from .hooks import Hooks, Subscription
from .request import ChatMessage, DeadlineOverrides, Overloaded, RequestError, TurnRequest
from .scheduler import Grant, Priority, ProviderScheduler

__all__ = [
    "ActiveTurn",
    "ChatMessage",
    "DeadlineOverrides",
    "Engine",
    "Grant",
    "Hooks",
    "Overloaded",
    "Priority",
    "ProviderScheduler",
    "RequestError",
    "Subscription",
    "TurnHandle",
    "TurnRequest",
]

"""Runs turns: route → generate (retries, fallback, deadlines, coalescing) → terminal event."""

from .engine import ActiveTurn, Engine, TurnHandle
from .hooks import Hooks, Subscription
from .request import ChatMessage, DeadlineOverrides, Overloaded, RequestError, TurnRequest

__all__ = [
    "ActiveTurn",
    "ChatMessage",
    "DeadlineOverrides",
    "Engine",
    "Hooks",
    "Overloaded",
    "RequestError",
    "Subscription",
    "TurnHandle",
    "TurnRequest",
]

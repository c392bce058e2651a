"""Schemas several structured-channel tests share."""

from __future__ import annotations

from typing import Any

NOTES: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "action_items": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["sentiment", "topics", "action_items"],
}
"""Issue 14's schema, as users write it: strings without maxLength."""

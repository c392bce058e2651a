"""Converting between rows, terminal events, page cursors and the store's JSON-ready dicts."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from tokenwire.store.models import Turn

TURN_COLUMNS = [c for c in Turn.__table__.columns]


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def encode_cursor(created_at: datetime, conversation_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), conversation_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, conversation_id = json.loads(raw)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not isinstance(conversation_id, str):
            raise ValueError
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValueError(f"invalid cursor: {cursor!r}") from exc
    return created_at, conversation_id


def conversation_dict(row: Row[Any]) -> dict[str, Any]:
    return {"id": row.id, "created_at": iso(row.created_at), "metadata": row.metadata}


def turn_dict(row: Row[Any]) -> dict[str, Any]:
    record = {c.key: getattr(row, c.key) for c in TURN_COLUMNS}
    record["started_at"] = iso(record["started_at"])
    record["finished_at"] = iso(record["finished_at"])
    return record


def terminal_values(terminal: dict[str, Any]) -> dict[str, Any]:
    """Column values of a terminal event's JSON form (``done`` or ``error``)."""
    kind = terminal.get("type")
    if kind == "done":
        values = {
            "answer": terminal.get("answer"),
            "status": terminal.get("status"),
            "partial": bool(terminal.get("partial")),
            "reason": str(terminal["reason"]) if terminal.get("reason") is not None else None,
            "usage": terminal.get("usage"),
            "timings": terminal.get("timings"),
            "structured": terminal.get("structured"),
            "sources": terminal.get("sources"),
        }
        # The route and model that actually answered (a fallback may have changed them).
        for key in ("model", "route"):
            if terminal.get(key) is not None:
                values[key] = terminal[key]
        return values
    if kind == "error":
        code = str(terminal.get("code"))
        return {
            "status": "failed",
            "partial": False,
            "reason": code,
            "error_code": code,
            "error_message": terminal.get("message"),
            "timings": terminal.get("timings"),
        }
    raise ValueError(f"not a terminal event: type={kind!r}")

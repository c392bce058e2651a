"""Turn records for router tests, built from a real ``Done`` event like the engine will."""

from __future__ import annotations

from typing import Any

from tokenwire.protocol import Done, Reason
from tokenwire.router import build_record


def make_record(
    stream_id: str = "s1", sentiment: str = "negative", **fields: Any
) -> dict[str, Any]:
    done = Done(
        stream_id=stream_id,
        seq=7,
        answer="The answer",
        status="completed",
        partial=False,
        reason=Reason.STOP,
        model="scripted",
        route="default",
        attempts=1,
        structured={"status": "valid", "data": {"sentiment": sentiment}},
        timings={"total": 12.5},
    )
    record = build_record(done, conversation_id="c1", metadata={"tenant": "acme"})
    record.update(fields)
    return record

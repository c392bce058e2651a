"""The structured channel's previews through a whole turn: valid prefixes only, and a
``structured.reset`` whenever a re-ask starts the object over (scripted provider)."""

from __future__ import annotations

from typing import Any

import pytest

from tokenwire import Engine, Event
from tokenwire.protocol import StructuredDone, StructuredError, StructuredPartial, StructuredReset

from .conftest import scripted_settings
from .test_turn import check_invariants

FEELING = {
    "type": "object",
    "properties": {
        "mood": {"enum": ["calm", "happy"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["mood"],
    "additionalProperties": False,
}


async def turn(engine: Engine, strategy: str, script: dict[str, Any]) -> list[Event]:
    body = {
        "prompt": "How are you?",
        "script": script,
        "extraction": {"schema": FEELING, "strategy": strategy},
    }
    events = [e async for e in (await engine.submit(body)).events()]
    check_invariants(events)
    return events


def could_be_feeling(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and set(data) <= {"mood", "tags"}
        and any(m.startswith(data.get("mood", "")) for m in ("calm", "happy"))
        and len(data.get("tags", [])) <= 2
    )


@pytest.fixture
async def engine() -> Any:
    # Generous: these extractions must succeed, however busy the machine.
    async with Engine(scripted_settings(extraction={"timeout_s": 120})) as eng:
        yield eng


async def test_an_inline_block_off_the_schema_never_previews_and_its_reask_resets(
    engine: Engine,
) -> None:
    events = await turn(
        engine,
        "inline",
        {
            "tokens": ["Hi! ", '<json>{"mood": "hap', 'pyish", "tags": ["a", "b", "c"]}</json>'],
            "extraction": {"tokens": ['{"mood": "ca', 'lm"}']},
        },
    )
    structured = [e for e in events if e.type.startswith("structured.")]
    previews = [e.data for e in structured if isinstance(e, StructuredPartial)]
    assert previews and all(could_be_feeling(p) for p in previews), previews
    assert {"mood": "hap"} in previews  # an enum prefix shows while it can still be one
    resets = [e for e in structured if isinstance(e, StructuredReset)]
    assert [(r.attempt, r.code) for r in resets] == [(2, "schema_invalid")]
    after = structured[structured.index(resets[0]) + 1 :]
    assert [e.data for e in after if isinstance(e, StructuredPartial)] == [
        {"mood": "ca"},
        {"mood": "calm"},
    ]
    assert isinstance(after[-1], StructuredDone) and after[-1].data == {"mood": "calm"}


async def test_every_reask_resets_with_its_attempt_and_what_was_wrong(engine: Engine) -> None:
    events = await turn(
        engine,
        "sequential",
        {"tokens": ["Hi"], "extraction": {"tokens": ['{"mood": "calm", "tags": ["x"']}},
    )
    resets = [(e.attempt, e.code) for e in events if isinstance(e, StructuredReset)]
    assert resets == [(2, "json_incomplete"), (3, "json_incomplete")]
    types = [e.type for e in events]
    assert types.index("structured.reset") > types.index("structured.partial")
    last_reset = max(i for i, t in enumerate(types) if t == "structured.reset")
    assert types.index("structured.error") > last_reset
    assert [e.code for e in events if isinstance(e, StructuredError)] == ["json_incomplete"]


async def test_a_first_attempt_that_succeeds_never_resets(engine: Engine) -> None:
    events = await turn(
        engine,
        "sequential",
        {"tokens": ["Hi"], "extraction": {"tokens": ['{"mood": "happy", ', '"tags": ["a"]}']}},
    )
    assert not any(isinstance(e, StructuredReset) for e in events)
    previews = [e.data for e in events if isinstance(e, StructuredPartial)]
    assert previews[-1] == {"mood": "happy", "tags": ["a"]}

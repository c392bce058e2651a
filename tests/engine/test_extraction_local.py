"""Sequential extraction on the real Gemma 3 270M: grammar-constrained, so every result parses
and validates, whatever the model makes of the prompt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from tokenwire import Done, Engine, Event, Settings

from ..support.model import HUNG_S, NO_DEADLINES
from ..support.schemas import NOTES
from .test_turn import check_invariants

pytestmark = pytest.mark.model

REVIEW = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "topic": {"type": "string", "maxLength": 40},
        "urgent": {"type": "boolean"},
    },
    "required": ["sentiment", "topic", "urgent"],
    "additionalProperties": False,
}

PROMPTS = [
    "My order arrived broken and nobody answers the phone.",
    "I love the new update, the app is so much faster!",
    "What time does the store open on Sunday?",
    "The invoice charged me twice, please fix it today.",
    "Thanks for the quick help yesterday.",
    "Can I change the color of my account page?",
    "The server is down and our whole team is blocked.",
    "Your delivery driver was very friendly.",
    "How do I reset my password?",
    "The food was cold and the waiter was rude.",
    "I want to cancel my subscription immediately.",
    "Is there a student discount?",
    "Great product, works exactly as described.",
    "My package has been stuck in customs for two weeks.",
    "The manual is confusing, but the device is fine.",
    "Please send me a copy of my last receipt.",
    "The battery dies after an hour, this is unacceptable.",
    "Do you ship to Canada?",
    "The hotel room was clean and the view was beautiful.",
    "Someone used my card without permission!",
]


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    # Grammar-constrained extraction over Gemma's 262k-token vocabulary takes 3-20 s idle, far
    # longer on a busy machine: its timeout (which cannot be off) and the deadlines stay out of
    # the way; HUNG_S only stops a hang.
    settings = Settings(extraction={"timeout_s": HUNG_S, "max_tokens": 96}, deadlines=NO_DEADLINES)
    async with Engine(settings) as eng:
        yield eng


async def sequential_turn(
    engine: Engine, prompt: str, schema: dict[str, Any], max_tokens: int
) -> tuple[list[Event], Done]:
    """One turn with a sequential extraction; its events and its (checked) terminal."""
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "extraction": {"schema": schema, "strategy": "sequential"},
    }
    async with asyncio.timeout(HUNG_S):
        events = [e async for e in (await engine.submit(body)).events()]
    done = check_invariants(events)
    assert isinstance(done, Done), prompt
    return events, done


async def test_twenty_varied_prompts_all_validate(engine: Engine) -> None:
    validator = jsonschema.Draft202012Validator(REVIEW)
    for prompt in PROMPTS:
        _, done = await sequential_turn(engine, prompt, REVIEW, max_tokens=24)
        record = done.structured
        assert record is not None and record["status"] == "ok", (prompt, record)
        assert record["strategy"] == "sequential" and record["valid"]
        validator.validate(record["data"])


# The schema of issue 14 as users write it (NOTES): two string arrays whose strings have no
# maxLength. Under llama.cpp's grammar the model wrote one string until max_tokens cut the JSON,
# every attempt; the decoder's bounds (output/bounds.py) make each string and array end.
NOTES_PROMPTS = [
    "How do I sleep better?",
    "My order arrived broken and nobody answers the phone.",
    "Give me three tips for writing clear emails.",
    "The invoice charged me twice, please fix it today.",
    "What should I pack for a weekend hike?",
    "I love the new update, the app is so much faster!",
    "How can I prepare for a job interview?",
    "The server is down and our whole team is blocked.",
    "What is a good way to learn a new language?",
    "The food was cold and the waiter was rude.",
]


@pytest.fixture
async def default_engine() -> AsyncIterator[Engine]:
    # The configuration's own extraction budget (max_tokens 512): the schema must finish as
    # users would run it. HUNG_S only stops a hang.
    settings = Settings(extraction={"timeout_s": HUNG_S}, deadlines=NO_DEADLINES)
    async with Engine(settings) as eng:
        yield eng


async def test_the_issue_schema_with_unbounded_strings_ends_valid_on_ten_turns(
    default_engine: Engine,
) -> None:
    validator = jsonschema.Draft202012Validator(NOTES)
    for prompt in NOTES_PROMPTS:
        events, done = await sequential_turn(default_engine, prompt, NOTES, max_tokens=32)
        assert [
            e.type
            for e in events
            if e.type.startswith("structured.") and e.type not in ("structured.partial",)
        ] == ["structured.done"], prompt
        record = done.structured
        assert record is not None and record["status"] == "ok", (prompt, record)
        assert record["attempts"] == 1, (prompt, record)
        validator.validate(record["data"])


async def test_a_sequential_extraction_continues_the_answers_evaluated_transcript(
    engine: Engine,
) -> None:
    _, done = await sequential_turn(engine, PROMPTS[0], REVIEW, max_tokens=24)
    assert done.structured is not None
    assert done.structured["status"] == "ok"
    local = engine.providers["local"]
    answered, extracted = list(local.turns)[-2:]  # type: ignore[attr-defined]
    assert answered.request.json_schema is None and extracted.request.json_schema is not None
    # The extraction's prompt starts with the answer's (which the model had just evaluated):
    # llama.cpp's context supplied it, only the tail was evaluated.
    assert extracted.prompt_reused >= answered.prompt_tokens
    assert extracted.prompt_tokens - extracted.prompt_reused < answered.prompt_tokens // 2

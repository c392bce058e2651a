"""The structured channel of a turn, with the scripted provider producing every failure."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tokenwire import Done, Engine, Event, RequestError, TextDelta
from tokenwire.protocol import StructuredDone, StructuredError, StructuredPartial, TextDone

from .conftest import scripted, scripted_settings
from .test_turn import check_invariants

MOOD = {"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]}


async def turn(engine: Engine, strategy: str, script: dict[str, Any], **extra: Any) -> list[Event]:
    body = {
        "prompt": "How are you?",
        "script": script,
        "extraction": {"schema": MOOD, "strategy": strategy, **extra},
    }
    return [e async for e in (await engine.submit(body)).events()]


def structured(events: list[Event]) -> dict[str, Any]:
    done = check_invariants(events)
    assert isinstance(done, Done) and done.structured is not None
    return done.structured


def text_of(events: list[Event]) -> str:
    return "".join(e.delta for e in events if isinstance(e, TextDelta))


@pytest.fixture
async def engine() -> Any:
    # Generous: these extractions must succeed, however busy the machine (the timeout's own
    # test below uses a hang).
    async with Engine(scripted_settings(extraction={"timeout_s": 120})) as eng:
        yield eng


async def test_sequential_extracts_after_text_done(engine: Engine) -> None:
    events = await turn(
        engine,
        "sequential",
        {
            "tokens": ["Fine, ", "thanks."],
            "extraction": {"tokens": ['{"mood"', ': "calm"}']},
        },
    )
    record = structured(events)
    assert record["status"] == "ok" and record["data"] == {"mood": "calm"}
    assert record["strategy"] == "sequential" and record["attempts"] == 1
    assert record["answer_hash"].startswith("sha256:")
    types = [e.type for e in events]
    assert types.index("text.done") < types.index("structured.partial")
    assert types.index("structured.done") < types.index("done")
    assert text_of(events) == "Fine, thanks."
    assert events[-1].timings["extract"] >= 0  # type: ignore[union-attr]


async def test_parallel_may_finish_before_the_text(engine: Engine) -> None:
    events = await turn(
        engine,
        "parallel",
        {
            "tokens": ["slow"],
            "first_delay_ms": 200,
            "extraction": {"tokens": ['{"mood": "x"}']},
        },
    )
    record = structured(events)
    assert record["status"] == "ok" and record["data"] == {"mood": "x"}
    types = [e.type for e in events]
    assert types.index("structured.done") < types.index("text.delta")


async def test_inline_hides_the_block_from_the_human_channel(engine: Engine) -> None:
    events = await turn(
        engine,
        "inline",
        {
            "tokens": ["All good.", " <js", 'on>{"mo', 'od": "ok"}</j', "son>"],
        },
    )
    record = structured(events)
    assert record["status"] == "ok" and record["data"] == {"mood": "ok"}
    assert text_of(events) == "All good. "
    done = events[-1]
    assert isinstance(done, Done) and done.answer == "All good."
    # Inline data follows the text it belongs to: never before the first delta.
    types = [e.type for e in events]
    assert types.index("text.delta") < types.index("structured.partial")


@pytest.mark.parametrize("cut", range(1, 40))
async def test_inline_delimiter_split_anywhere(engine: Engine, cut: int) -> None:
    stream = 'Answer <b>ok</b>. <json>{"mood": "<json>"}</json>'
    tokens = [stream[:cut], stream[cut:]] if cut < len(stream) else [stream]
    events = await turn(engine, "inline", {"tokens": tokens})
    assert text_of(events) == "Answer <b>ok</b>. "
    assert structured(events)["data"] == {"mood": "<json>"}


@pytest.mark.parametrize(
    ("extraction", "code", "attempts"),
    [
        ({"tokens": ["not json at all"]}, "json_invalid", 3),
        ({"tokens": ['{"mood": 5}']}, "schema_invalid", 3),
        ({"tokens": ['{"mood": "cut']}, "json_incomplete", 3),
        ({"tokens": ["{"], "fault": {"kind": "fail", "at": 0}}, "extraction_failed", 1),
        ({"tokens": ["{"], "fault": {"kind": "hang", "at": 1}}, "timeout", 1),
    ],
    ids=["invalid", "schema", "truncated", "call-fails", "call-hangs"],
)
@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
async def test_failures_end_in_structured_error_and_the_text_is_unaffected(
    extraction: dict[str, Any], code: str, attempts: int, strategy: str
) -> None:
    async with Engine(scripted_settings(extraction={"timeout_s": 0.3})) as engine:
        events = await turn(engine, strategy, {"tokens": ["Hi", "!"], "extraction": extraction})
    record = structured(events)
    assert record["status"] == "error" and record["error"]["code"] == code
    assert record["needs_review"] and record["attempts"] == attempts
    assert [e.code for e in events if isinstance(e, StructuredError)] == [code]
    assert not any(isinstance(e, StructuredDone) for e in events)
    done = events[-1]
    assert isinstance(done, Done) and done.reason.value == "stop" and done.answer == "Hi!"
    assert [e.text for e in events if isinstance(e, TextDone)] == ["Hi!"]


async def test_a_reask_with_the_errors_can_succeed(engine: Engine) -> None:
    # The first extraction attempt is bad; the re-ask (attempt 2) is not.
    events = await turn(
        engine,
        "sequential",
        {
            "tokens": ["Hi"],
            "extraction": {
                "tokens": ['{"mood": "good"}'],
                "fault": {"kind": "truncate", "at": 0, "times": 1},
            },
        },
    )
    record = structured(events)
    assert record["status"] == "ok" and record["attempts"] == 2


async def test_partial_previews_only_on_change(engine: Engine) -> None:
    events = await turn(
        engine,
        "sequential",
        {
            "tokens": ["Hi"],
            "extraction": {"tokens": ['{"mood": "', "h", "a", "p", "py", '"', "}"]},
        },
    )
    previews = [e.data for e in events if isinstance(e, StructuredPartial)]
    assert all(a != b for a, b in itertools.pairwise(previews))
    assert previews[-1] == {"mood": "happy"}


async def test_no_extraction_for_a_turn_that_failed_before_text(engine: Engine) -> None:
    events = await turn(
        engine,
        "parallel",
        {
            "tokens": ["x"],
            "fault": {"kind": "fail", "at": 0},
            "extraction": {"tokens": ["{"], "fault": {"kind": "hang", "at": 1}},
        },
    )
    terminal = check_invariants(events)
    assert terminal.type == "error"
    # The parallel extraction (hanging) was stopped with the turn, not left running.
    assert not any(isinstance(e, StructuredDone | StructuredError) for e in events)
    async with asyncio.timeout(10):
        await scripted(engine).wait_aborted()


async def test_named_schemas_and_bad_specs() -> None:
    settings = scripted_settings(schemas={"mood": MOOD})
    async with Engine(settings) as engine:
        body = {
            "prompt": "x",
            "script": {"tokens": ["Hi"], "extraction": {"tokens": ['{"mood": "ok"}']}},
            "extraction": {"schema": "mood", "strategy": "sequential"},
        }
        events = [e async for e in (await engine.submit(body)).events()]
        assert structured(events)["schema"] == "mood"
        for bad in (
            {"schema": "nope"},
            {"schema": {"type": "wrong"}},
            {"schema": MOOD, "strategy": "telepathy"},
            {"schema": MOOD, "unknown": 1},
        ):
            with pytest.raises(RequestError):
                await engine.submit({"prompt": "x", "extraction": bad})


async def test_auto_picks_inline_when_latency_matters_and_the_model_can() -> None:
    async with Engine(scripted_settings()) as engine:
        events = await turn(
            engine,
            "auto",
            {"tokens": ["Hi"], "extraction": {"tokens": ['{"mood": "a"}']}},
            latency="low",
        )
    # A scripted (not local) chain may write the block; this script writes none, so the
    # inline attempt fails and the re-ask (an extraction call) supplies the data.
    record = structured(events)
    assert record["strategy"] == "inline" and record["requested_strategy"] == "auto"
    assert record["status"] == "ok" and record["attempts"] == 2


async def test_outcomes_and_background_waits_are_metered() -> None:
    settings = scripted_settings(
        providers={"a": {"kind": "scripted", "concurrency": 1}, "b": {"kind": "scripted"}}
    )
    async with Engine(settings) as engine:
        await turn(
            engine, "sequential", {"tokens": ["Hi"], "extraction": {"tokens": ['{"mood": "ok"}']}}
        )
        metrics = engine.metrics.render().decode()
    assert 'tokenwire_structured_total{status="ok",strategy="sequential"} 1.0' in metrics
    assert (
        'tokenwire_provider_queue_wait_seconds_count{priority="background",provider="a"} 1.0'
        in metrics
    )
    assert (
        'tokenwire_provider_queue_wait_seconds_count{priority="interactive",provider="a"} 1.0'
        in metrics
    )


@pytest.mark.parametrize(
    "block",
    ["<json>not json</json>", '<json>{"mood": 5}</json>', '<json>{"mood": "cu'],
    ids=["invalid", "schema", "truncated"],
)
async def test_inline_failures_reask_then_error_and_never_leak(engine: Engine, block: str) -> None:
    events = await turn(
        engine, "inline", {"tokens": ["Hi! ", block], "extraction": {"tokens": ["still bad"]}}
    )
    record = structured(events)
    assert record["status"] == "error" and record["attempts"] == 3
    assert text_of(events) == "Hi! "
    errors = [e for e in events if isinstance(e, StructuredError)]
    assert len(errors) == 1 and errors[0].code == "json_invalid"  # the last re-ask's verdict


async def test_an_inline_retry_starts_from_a_clean_splitter(engine: Engine) -> None:
    # Attempt 1 streams only a held-back marker prefix (nothing visible), then fails; the
    # retry's answer must not inherit that prefix.
    events = await turn(
        engine,
        "inline",
        {
            "tokens": ["<js", "Fine. ", '<json>{"mood": "ok"}</json>'],
            "fault": {"kind": "fail", "at": 1, "times": 1},
        },
    )
    assert text_of(events) == "<jsFine. "  # attempt 2 streams all three tokens, once
    record = structured(events)
    assert record["status"] == "ok" and record["data"] == {"mood": "ok"}
    done = events[-1]
    assert isinstance(done, Done) and done.attempts == 2


async def test_cancel_during_extraction_stops_it(engine: Engine) -> None:
    body = {
        "prompt": "x",
        "extraction": {"schema": MOOD, "strategy": "sequential"},
        "script": {
            "tokens": ["Hi"],
            "extraction": {"tokens": ["{"], "fault": {"kind": "hang", "at": 1}},
        },
    }
    handle = await engine.submit(body)
    events: list[Event] = []
    async for event in handle.events():
        events.append(event)
        if isinstance(event, StructuredPartial):
            handle.cancel()
    done = check_invariants(events)
    assert isinstance(done, Done) and done.reason.value == "cancelled"
    assert done.structured is not None and done.structured["status"] == "cancelled"
    assert done.answer == "Hi"
    async with asyncio.timeout(10):
        await scripted(engine).wait_aborted()


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])
async def test_a_call_cut_by_max_tokens_is_asked_once_more_under_tighter_bounds_then_fails(
    engine: Engine, strategy: str
) -> None:
    # A cut is not "invalid JSON" to correct: the same question comes once more with the
    # decoder's schema bounded tighter, and a second cut ends it with the reason, without
    # spending the remaining retries.
    cut = {"tokens": ['{"mood": "calm calm calm'], "finish": "length"}
    events = await turn(engine, strategy, {"tokens": ["Hi"], "extraction": cut})
    record = structured(events)
    assert record["status"] == "error" and record["error"]["code"] == "truncated"
    assert "max_tokens" in record["error"]["message"] and record["attempts"] == 2
    calls = [r for r in scripted(engine).requests if r.json_schema is not None]
    assert [c.messages for c in calls[1:]] == [calls[0].messages]
    assert calls[0].json_schema == MOOD
    tighter = calls[1].json_schema
    assert tighter is not None and tighter["properties"]["mood"]["maxLength"] >= 16
    assert [e.code for e in events if isinstance(e, StructuredError)] == ["truncated"]

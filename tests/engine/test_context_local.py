"""A long conversation on the real Gemma 3 270M (n_ctx 2048): its history is counted with
llama.cpp's own tokenizer and trimmed to fit, so a turn never fails with a context overflow,
and ``done.context`` says what was left out."""

from __future__ import annotations

import asyncio

import pytest

from tokenwire import Done, Engine, Settings

from ..support.model import HUNG_S, NO_DEADLINES
from .test_turn import check_invariants

pytestmark = pytest.mark.model

FACT = (
    "Turn {i}: the warehouse in city number {i} ships {i} crates of green tea, "
    "forty boxes of paper, and a long list of spare parts for bicycles every single week."
)


async def test_a_long_conversation_never_overflows_the_local_context() -> None:
    # Prompts near the full window: slow to evaluate on a busy machine, so no deadline applies.
    async with Engine(Settings(deadlines=NO_DEADLINES)) as engine, asyncio.timeout(HUNG_S):
        store = engine.store
        assert store is not None
        conversation = await store.create_conversation()
        cid = conversation["id"]
        # 60 earlier turns of ~40 tokens a side: far more than a 2048-token window holds.
        for i in range(60):
            stream_id = f"tw_seed{i:03d}"
            await store.start_turn(stream_id, cid, {"prompt": FACT.format(i=i)}, "default", None)
            await store.finish_turn(
                stream_id,
                {
                    "type": "done",
                    "stream_id": stream_id,
                    "seq": 5,
                    "answer": "Noted. " + FACT.format(i=i),
                    "status": "completed",
                    "partial": False,
                    "reason": "stop",
                },
            )
        for question in ("How many crates ship from city 59?", "And from city 58?"):
            handle = await engine.submit(
                {"prompt": question, "conversation_id": cid, "max_tokens": 48}
            )
            events = [e async for e in handle.events()]
            done = check_invariants(events)
            assert isinstance(done, Done), events[-1]
            assert done.reason.value in ("stop", "length")
            context = done.context
            assert context is not None
            assert context["counter"] == "llama.cpp" and context["window"] == 2048
            assert context["history_turns"] >= 60
            assert 0 < context["kept_turns"] < context["history_turns"]
            # The oldest turns went first; the newest were kept.
            assert "tw_seed000" in context["dropped"] and "tw_seed059" not in context["dropped"]
            assert context["prompt_tokens"] + context["reserve_output"] <= 2048
            # The model was given exactly the prompt that was counted (nothing trimmed again
            # by the provider's own last-resort fitting).
            assert done.usage is not None and not done.usage["estimated"]
            assert done.usage["input_tokens"] == context["prompt_tokens"]
        assert b"tokenwire_context_trimmed_turns_total" in engine.metrics.render()

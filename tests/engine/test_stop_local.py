"""Stop during a long prompt on the real Gemma 3 270M: the engine's cancel reaches the model
between two chunks of the prompt's evaluation, the turn ends as a cancelled `done`, and the
single model slot is free for the next user's turn at once."""

from __future__ import annotations

import asyncio

import pytest

from tokenwire import Done, Engine, Reason, Settings
from tokenwire.protocol import Phase, Status
from tokenwire.providers.local import LocalProvider

from ..support.model import HUNG_S, NO_DEADLINES
from .test_turn import check_invariants

pytestmark = pytest.mark.model

# ~1,300 prompt tokens once in the provider's transcript: seconds of prompt evaluation.
LONG_NOTES = " ".join(
    f"Note {i}: the river near town {i} flows north past {i} old mills." for i in range(60)
)


async def test_a_stop_during_a_long_prompt_frees_the_model_for_the_next_turn() -> None:
    settings = Settings(deadlines=NO_DEADLINES, store={"url": ""})
    async with Engine(settings) as engine, asyncio.timeout(HUNG_S):
        local = engine.providers["local"]
        assert isinstance(local, LocalProvider)
        handle = await engine.submit(
            {"prompt": LONG_NOTES + " Which town has the most mills?", "max_tokens": 16}
        )
        events = []
        async for event in handle.events():
            events.append(event)
            # `generating` follows the provider's Begin: its worker is evaluating the prompt.
            if isinstance(event, Status) and event.phase is Phase.GENERATING:
                break
        [stopped] = [t for t in local.turns if not t.ended.is_set()]
        assert await asyncio.to_thread(stopped.prefill_begun.wait, HUNG_S)
        assert handle.cancel()
        done = await handle.wait()
        events.extend([e async for e in handle.events(after_seq=events[-1].seq)])
        assert check_invariants(events) == done
        assert isinstance(done, Done) and done.reason is Reason.CANCELLED and done.partial
        assert done.answer == ""
        # The cancel reached llama.cpp mid-prompt: part of the prompt was never evaluated.
        assert await asyncio.to_thread(stopped.ended.wait, HUNG_S)
        assert stopped.prefill_stopped
        assert stopped.prompt_evaluated < stopped.prompt_tokens and stopped.tokens == 0
        # The next user's turn runs on a free model, to its end.
        after = await (await engine.submit({"prompt": "Say hello.", "max_tokens": 8})).wait()
        assert isinstance(after, Done) and not after.partial
        [nxt] = [t for t in local.turns if t.request.messages[-1].content == "Say hello."]
        assert stopped.ended_at is not None and nxt.started_at is not None
        assert stopped.ended_at <= nxt.started_at and local.waiting == 0

"""llguidance token masks on the real Gemma 3 270M (providers/grammar.py), through the local
provider's model thread."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from tokenwire.config import LocalProviderSettings
from tokenwire.providers.base import Finish, GenerationRequest, Message, ProviderError, TextChunk
from tokenwire.providers.grammar import GrammarEngine, GrammarError
from tokenwire.providers.local import LocalProvider

pytestmark = pytest.mark.model

ORDER = {
    "type": "object",
    "properties": {
        "item": {"type": "string", "maxLength": 24},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "express": {"type": "boolean"},
    },
    "required": ["item", "count", "express"],
    "additionalProperties": False,
}
PROMPT = (
    "Text: Please send me two blue umbrellas by express mail.\nExtract the order as JSON.\nJSON:"
)


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    local = LocalProvider("local", LocalProviderSettings(n_threads=2))
    asyncio.run(local.start())
    yield local
    asyncio.run(local.aclose())


def generate(llm: Any, schema: dict[str, Any], max_tokens: int) -> tuple[str, str, bool]:
    from llama_cpp import LogitsProcessorList

    constraint = GrammarEngine(llm).constraint(schema, leading_space=True)
    ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    out = llm.create_completion(
        ids,
        max_tokens=max_tokens,
        temperature=0.0,
        logits_processor=LogitsProcessorList([constraint]),
    )
    choice = out["choices"][0]
    return choice["text"], choice["finish_reason"], constraint.complete


def test_greedy_decoding_under_the_mask_is_the_schemas_json_and_stops_after_it(
    provider: LocalProvider,
) -> None:
    text, reason, complete = asyncio.run(provider.call(lambda llm: generate(llm, ORDER, 96)))
    # The grammar, not the prompt, makes this JSON: free, the model writes prose here.
    jsonschema.validate(json.loads(text), ORDER)
    assert text.lstrip().startswith("{") and text.endswith("}")
    assert reason == "stop" and complete  # ended at the closing brace, not at max_tokens


def test_a_budget_too_small_is_cut_and_says_so(provider: LocalProvider) -> None:
    text, reason, complete = asyncio.run(provider.call(lambda llm: generate(llm, ORDER, 3)))
    assert reason == "length" and not complete
    with pytest.raises(ValueError):
        json.loads(text)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/nowhere"},
        {"type": "string", "pattern": "(?<=a)b"},
        {"type": "integer", "minimum": 5, "maximum": 1},
    ],
    ids=["dangling-ref", "look-behind", "unsatisfiable"],
)
def test_a_schema_the_engine_cannot_compile_is_a_bad_request(
    provider: LocalProvider, schema: dict[str, Any]
) -> None:
    with pytest.raises(GrammarError):
        asyncio.run(provider.call(lambda llm: GrammarEngine(llm).constraint(schema)))

    async def stream() -> list[Any]:
        request = GenerationRequest(
            messages=(Message("user", PROMPT),), max_tokens=16, json_schema=schema
        )
        return [chunk async for chunk in provider.stream(request)]

    with pytest.raises(ProviderError) as caught:
        asyncio.run(stream())
    assert caught.value.code == "upstream_bad_request" and not caught.value.retryable


def test_a_response_format_style_request_streams_valid_json(provider: LocalProvider) -> None:
    async def stream() -> list[Any]:
        request = GenerationRequest(
            messages=(Message("user", PROMPT),), max_tokens=96, json_schema=ORDER
        )
        return [chunk async for chunk in provider.stream(request)]

    chunks = asyncio.run(stream())
    jsonschema.validate(
        json.loads("".join(c.text for c in chunks if isinstance(c, TextChunk))), ORDER
    )
    assert chunks[-1] == Finish("stop")

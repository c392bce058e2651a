"""Reading provider streams in tests, with a guard so a hang fails instead of stalling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tokenwire.providers.base import ProviderChunk, ProviderError, TextChunk


async def collect(
    stream: AsyncIterator[ProviderChunk], guard_s: float = 10.0
) -> list[ProviderChunk]:
    async with asyncio.timeout(guard_s):
        return [chunk async for chunk in stream]


async def raises(
    stream: AsyncIterator[ProviderChunk], guard_s: float = 10.0
) -> tuple[list[ProviderChunk], ProviderError]:
    """The chunks before the stream raised, and the ProviderError it raised."""
    seen: list[ProviderChunk] = []
    with pytest.raises(ProviderError) as info:
        async with asyncio.timeout(guard_s):
            async for chunk in stream:
                seen.append(chunk)
    return seen, info.value


def text(chunks: list[ProviderChunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))

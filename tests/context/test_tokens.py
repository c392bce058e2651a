"""Token counters with the real tiktoken encodings (rebuilt offline from the bundled ranks) and
the estimate; which counter and which window each provider gets."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from tokenwire.config import (
    AnthropicProviderSettings,
    LocalProviderSettings,
    OpenAIProviderSettings,
)
from tokenwire.context import (
    CounterUnavailable,
    EstimateCounter,
    LlamaTokenCounter,
    TiktokenCounter,
    TokenCounter,
    context_window_for,
    counter_for,
    tiktoken_encoding_for,
)
from tokenwire.context import tokens as tokens_module
from tokenwire.context.tokens import estimate_tokens
from tokenwire.providers import Message, ScriptedProvider
from tokenwire.providers.anthropic import AnthropicProvider
from tokenwire.providers.local import LocalProvider
from tokenwire.providers.openai import OpenAIProvider

# OpenAI's cookbook ("How to count tokens with tiktoken"): the ids of this string in each
# encoding, and a chat whose prompt the API counts as 129 tokens on gpt-3.5-turbo/gpt-4
# (cl100k_base) and 124 on gpt-4o/gpt-4o-mini (o200k_base). Its messages carry a ``name``,
# which costs its tokens plus 1 and which Message does not have: added below by hand.
GREAT = "tiktoken is great!"
GREAT_IDS = {
    "cl100k_base": [83, 1609, 5963, 374, 2294, 0],
    "o200k_base": [83, 8251, 2488, 382, 2212, 0],
}
COOKBOOK: list[tuple[str, str | None, str]] = [
    (
        "system",
        None,
        "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    ),
    ("system", "example_user", "New synergies will help drive top-line growth."),
    ("system", "example_assistant", "Things working well together will increase revenue."),
    (
        "system",
        "example_user",
        "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    ),
    (
        "system",
        "example_assistant",
        "Let's talk later when we're less busy about how to do better.",
    ),
    (
        "user",
        None,
        "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]
COOKBOOK_TOKENS = {"cl100k_base": 129, "o200k_base": 124}


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken would download its files; the counters must never need to."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a token counter tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_bundled_encoding_gives_openai_token_ids(encoding: str) -> None:
    counter = TiktokenCounter(encoding)
    assert counter.name == f"tiktoken:{encoding}"
    assert counter.encoding.encode_ordinary(GREAT) == GREAT_IDS[encoding]
    assert counter.encoding.decode(GREAT_IDS[encoding]) == GREAT


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_chat_count_matches_what_the_openai_api_counts(encoding: str) -> None:
    counter = TiktokenCounter(encoding)
    messages = [Message(role, content) for role, _, content in COOKBOOK]  # type: ignore[arg-type]
    names = sum(len(counter.encoding.encode_ordinary(n)) + 1 for _, n, _ in COOKBOOK if n)
    assert counter.count(messages) + names == COOKBOOK_TOKENS[encoding]


def test_chat_overhead_is_three_per_message_plus_three_for_the_reply() -> None:
    counter = TiktokenCounter("o200k_base")
    assert counter.count([]) == 3
    # "user" is one token, "hello world" two: 3 + (3 + 1 + 2).
    assert counter.count([Message("user", "hello world")]) == 9
    assert counter.count([Message("user", "hello world")] * 4) == 3 + 4 * 6


def test_special_token_text_is_counted_as_text() -> None:
    counter = TiktokenCounter("cl100k_base")
    assert counter.count([Message("user", "<|endoftext|>")]) > 3 + 3 + 1 + 1


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
def test_encoding_definitions_are_tiktoken_own(
    encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pattern, special tokens and file hash equal tiktoken's definition of the encoding."""
    seen: dict[str, Any] = {}

    def load(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen["hash"] = expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", load)
    theirs = getattr(openai_public, encoding)()
    ours = tokens_module._ENCODINGS[encoding]
    assert (ours.pat_str, ours.special_tokens, ours.sha256) == (
        theirs["pat_str"],
        theirs["special_tokens"],
        seen["hash"],
    )


def test_ranks_that_are_not_openais_are_refused(tmp_path: Path) -> None:
    spec = tokens_module._ENCODINGS["cl100k_base"]
    # One token, "a" with rank 0: well-formed, but not cl100k_base.
    (tmp_path / spec.quicktok_file).write_bytes(b"\x01\x00\x00\x00" + b"\x01\x00a" + b"\x00" * 4)
    with pytest.raises(CounterUnavailable, match="does not hold OpenAI's cl100k_base"):
        tokens_module.bundled_ranks("cl100k_base", tmp_path)
    (tmp_path / spec.quicktok_file).write_bytes(b"\x05\x00\x00\x00")
    with pytest.raises(CounterUnavailable, match="cannot read"):
        tokens_module.bundled_ranks("cl100k_base", tmp_path)


def test_missing_ranks_fall_back_to_the_estimate_and_say_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed() -> Path:
        raise CounterUnavailable("the quicktok-v1 package (tiktoken's ranks) is not installed")

    monkeypatch.setattr(tokens_module, "_quicktok_data_dir", not_installed)
    # Past the per-process cache of encodings, which already holds the real ones.
    monkeypatch.setattr(
        tokens_module, "_tiktoken_encoding", tokens_module._tiktoken_encoding.__wrapped__
    )
    with pytest.raises(CounterUnavailable, match="quicktok-v1"):
        TiktokenCounter("o200k_base")
    provider = OpenAIProvider("gpt", OpenAIProviderSettings(model="gpt-4o-mini"))
    counter = counter_for(provider)
    assert isinstance(counter, EstimateCounter)
    assert counter.name == "estimate:tiktoken-unavailable"


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("openai/gpt-4o-2024-08-06", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("llama3.1:8b", None),
        ("Qwen/Qwen2.5-7B-Instruct", None),
        ("o1x", None),
    ],
)
def test_encoding_by_model_name(model: str, encoding: str | None) -> None:
    assert tiktoken_encoding_for(model) == encoding


def test_estimate_weights_each_kind_of_character() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd efg") == 2  # 8 letters and spaces / 4
    assert estimate_tokens("1234") == 2  # digits / 2
    assert estimate_tokens('{"a":1}') == 6  # 5 punctuation + (1 letter + 1 digit) rounded up
    assert estimate_tokens("日本語") == 5  # 9 UTF-8 bytes / 2
    assert estimate_tokens("🎉") == 3  # 4 bytes / 2 + 1
    counter = EstimateCounter()
    assert counter.count([]) == 3
    assert counter.count([Message("user", "abcd efg"), Message("assistant", "1234")]) == 3 + 6 + 6


SAMPLES = {
    "prose": "Give me three tips for writing clear emails, and explain why each one works.",
    "code": "def fit(history, budget):\n    return [t for t in history if t.cost <= budget]\n",
    "json": '{"id": 12345, "values": [1.5, 2.25, 3.125], "ok": true, "name": "x_y-z"}',
    "numbers": "3141592653589793238462643383279502884197169399375105820974944592",
    "german": "Die Hauptstadt von Frankreich ist Paris; sie liegt an der Seine.",
    "japanese": "東京は日本の首都です。人口は約千四百万人です。京都には多くの寺があります。",
    "chinese": "北京是中国的首都，有着悠久的历史和丰富的文化。长城是世界上最著名的建筑之一。",  # noqa: RUF001
    "korean": "서울은 대한민국의 수도이며 인구는 약 천만 명입니다. 한강이 도시를 흐릅니다.",
    "russian": "Москва является столицей России и крупнейшим городом страны.",
    "greek": "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και μία από τις αρχαιότερες πόλεις.",  # noqa: RUF001
    "arabic": "القاهرة هي عاصمة مصر وأكبر مدينة في العالم العربي من حيث عدد السكان.",
    "hindi": "नई दिल्ली भारत की राजधानी है और यह देश के सबसे बड़े शहरों में से एक है।",
    "thai": "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นเมืองที่ใหญ่ที่สุด",
    "emoji": "Great job 🎉🎉 see you soon 👋😀🚀",
}


@pytest.mark.parametrize("encoding", ["cl100k_base", "o200k_base"])
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_estimate_is_not_below_tiktoken(encoding: str, sample: str) -> None:
    text = SAMPLES[sample]
    real = len(TiktokenCounter(encoding).encoding.encode_ordinary(text))
    assert estimate_tokens(text) >= real


def test_counter_and_window_for_each_kind() -> None:
    gpt = OpenAIProvider("gpt", OpenAIProviderSettings(model="gpt-4o-mini"))
    old = OpenAIProvider("old", OpenAIProviderSettings(model="gpt-4"))
    ollama = OpenAIProvider("ollama", OpenAIProviderSettings(model="llama3.1:8b"))
    claude = AnthropicProvider("claude", AnthropicProviderSettings())
    scripted = ScriptedProvider()
    local = LocalProvider("local", LocalProviderSettings(n_ctx=4096))

    counters: dict[str, TokenCounter] = {
        p.name: counter_for(p) for p in (gpt, old, ollama, claude, scripted, local)
    }
    assert {name: c.name for name, c in counters.items()} == {
        "gpt": "tiktoken:o200k_base",
        "old": "tiktoken:cl100k_base",
        "ollama": "estimate",
        "claude": "estimate",
        "scripted": "estimate",
        "local": "llama.cpp",
    }
    assert all(isinstance(c, TokenCounter) for c in counters.values())
    assert isinstance(counters["local"], LlamaTokenCounter)
    assert [context_window_for(p) for p in (gpt, old, ollama, claude, local)] == [
        128_000,
        8_192,
        128_000,
        200_000,
        4096,
    ]
    assert context_window_for(scripted) >= 1_000_000


def test_unknown_kind_has_no_window() -> None:
    class Other(ScriptedProvider):
        kind = "other"

    other = Other()
    assert counter_for(other).name == "estimate"
    with pytest.raises(ValueError, match="'other'"):
        context_window_for(other)


async def test_llama_counter_refuses_before_load_and_after_close() -> None:
    local = LocalProvider("local", LocalProviderSettings())
    counter = LlamaTokenCounter(local)
    with pytest.raises(CounterUnavailable, match="not loaded"):
        counter.count([Message("user", "hi")])
    await local.aclose()
    with pytest.raises(CounterUnavailable, match="closed"):
        counter.count([Message("user", "hi")])

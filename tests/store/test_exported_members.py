"""``tokenwire.store.__all__`` is pinned: a change to the public API is deliberate."""

from __future__ import annotations

import tokenwire.store


def test_all_is_sorted_and_every_name_exists() -> None:
    def isort_style(name: str) -> tuple[int, str]:  # constants, classes, then the rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    names = tokenwire.store.__all__
    assert names == sorted(names, key=isort_style)
    assert names == [
        "DEFAULT_LEASE_S",
        "DEFAULT_URL",
        "INTERRUPTED",
        "Store",
        "TurnFinish",
        "TurnStart",
        "migrate_sync",
    ]
    for name in names:
        assert hasattr(tokenwire.store, name), name

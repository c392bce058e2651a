"""The outbox: one item per (stream, route), claims are leases, settle once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tokenwire.store import Store


async def test_enqueue_twice_is_a_no_op(store: Store) -> None:
    first = await store.enqueue("s", "sink", {"n": 1})

    assert await store.enqueue("s", "sink", {"n": 2}) == first
    assert await store.enqueue("s", "other", {"n": 3}) != first
    claimed = await store.claim_due(10)
    assert [(c["route"], c["payload"]) for c in claimed] == [
        ("sink", {"n": 1}),
        ("other", {"n": 3}),
    ]


async def test_a_claim_is_a_lease(store: Store) -> None:
    item_id = await store.enqueue("s", "sink", {"n": 1})
    now = datetime.now(UTC)

    [claimed] = await store.claim_due(10, lease_s=60, now=now)

    assert claimed == {"id": item_id, "stream_id": "s", "route": "sink", "payload": {"n": 1},
                       "attempts": 1}  # fmt: skip
    assert await store.claim_due(10, now=now + timedelta(seconds=59)) == []
    # The worker died without settling: the item is due again once the lease ran out.
    [again] = await store.claim_due(10, now=now + timedelta(seconds=61))
    assert again["attempts"] == 2


async def test_mark_failed_retries_at_the_given_time(store: Store) -> None:
    item_id = await store.enqueue("s", "sink", {})
    await store.claim_due(1)
    retry_at = datetime.now(UTC) + timedelta(hours=1)

    assert await store.mark_failed(item_id, "HTTP 503", retry_at)

    assert await store.claim_due(10) == []
    [claimed] = await store.claim_due(10, now=retry_at)
    assert claimed["attempts"] == 2
    item = await store.get_outbox_item(item_id)
    assert item is not None
    assert item["last_error"] == "HTTP 503"


async def test_mark_failed_without_retry_is_final(store: Store) -> None:
    item_id = await store.enqueue("s", "sink", {})

    assert await store.mark_failed(item_id, "HTTP 400", None)

    assert await store.claim_due(10, now=datetime.now(UTC) + timedelta(days=365)) == []
    item = await store.get_outbox_item(item_id)
    assert item is not None
    assert item["state"] == "dead"


async def test_mark_delivered_once(store: Store) -> None:
    item_id = await store.enqueue("s", "sink", {})
    await store.claim_due(1)

    assert await store.mark_delivered(item_id)

    assert not await store.mark_delivered(item_id)
    assert not await store.mark_failed(item_id, "late", None)
    assert await store.claim_due(10, now=datetime.now(UTC) + timedelta(days=365)) == []
    item = await store.get_outbox_item(item_id)
    assert item is not None
    assert item["state"] == "delivered"
    assert item["delivered_at"] is not None
    assert await store.get_outbox_item(item_id + 1000) is None


async def test_concurrent_claims_never_share_an_item(store: Store) -> None:
    ids = {await store.enqueue(f"s{n}", "sink", {"n": n}) for n in range(10)}

    batches = await asyncio.gather(*(store.claim_due(10) for _ in range(5)))

    claimed = [item["id"] for batch in batches for item in batch]
    assert sorted(claimed) == sorted(ids)

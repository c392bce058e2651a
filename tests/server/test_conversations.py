"""``/v1/conversations`` over real HTTP: create, read with the turns' final records, page."""

from __future__ import annotations

from typing import Any

from .conftest import Live, live_server, read_sse, settings


async def turn(live: Live, body: dict[str, Any]) -> list[Any]:
    async with live.client.stream("POST", "/v1/streams", json=body) as response:
        assert response.status_code == 200
        return await read_sse(response)


async def test_create_read_and_take_turns_in_a_conversation(live: Live) -> None:
    created = await live.client.post("/v1/conversations", json={"metadata": {"user": "u1"}})
    assert created.status_code == 201
    conversation = created.json()
    cid = conversation["id"]
    assert created.headers["location"] == f"/v1/conversations/{cid}"
    assert conversation["metadata"] == {"user": "u1"}
    assert cid.startswith("cv_") and len(cid) == 3 + 32

    first = await turn(
        live, {"prompt": "I like tea.", "conversation_id": cid, "script": {"tokens": ["Noted."]}}
    )
    assert first[0].conversation_id == cid
    second = await turn(
        live, {"prompt": "What do I like?", "conversation_id": cid, "script": {"tokens": ["Tea."]}}
    )
    assert second[-1].context["kept_turns"] == 1

    read = (await live.client.get(f"/v1/conversations/{cid}")).json()
    assert [t["answer"] for t in read["turns"]] == ["Noted.", "Tea."]
    assert [t["stream_id"] for t in read["turns"]] == [first[0].stream_id, second[0].stream_id]
    for t in read["turns"]:
        assert t["status"] == "completed" and t["terminal"]["type"] == "done"
    # The provider saw the first exchange before the second question.
    sent = [(m.role, m.content) for m in live.provider.requests[-1].messages]
    assert sent == [
        ("user", "I like tea."),
        ("assistant", "Noted."),
        ("user", "What do I like?"),
    ]


async def test_paging_is_stable_and_complete(live: Live) -> None:
    made = [(await live.client.post("/v1/conversations", json={})).json()["id"] for _ in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await live.client.get("/v1/conversations", params=params)).json()
        pages += 1
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # A conversation created while paging never makes a page repeat or skip one.
        await live.client.post("/v1/conversations", json={})
    assert pages == 3
    assert seen == list(reversed(made))


async def test_bad_input_is_a_clear_4xx(live: Live) -> None:
    cases = [
        ("GET", "/v1/conversations/cv_missing", None, 404, "conversation_not_found"),
        ("GET", "/v1/conversations/" + "x" * 300, None, 404, "conversation_not_found"),
        ("GET", "/v1/conversations?cursor=%%%", None, 400, "bad_request"),
        ("GET", "/v1/conversations?limit=0", None, 422, "invalid_request"),
        ("GET", "/v1/conversations?limit=100000", None, 422, "invalid_request"),
        ("POST", "/v1/conversations", {"metadata": "no"}, 422, "invalid_request"),
        ("POST", "/v1/conversations", {"bogus": 1}, 422, "invalid_request"),
        ("POST", "/v1/conversations", [1, 2], 400, None),
    ]
    for method, path, body, status, code in cases:
        response = await live.client.request(method, path, json=body)
        assert response.status_code == status, (method, path, response.text)
        if code is not None:
            assert response.json()["error"]["code"] == code
    response = await live.client.post(
        "/v1/streams",
        json={"prompt": "x", "conversation_id": "cv_missing", "script": {"tokens": ["a"]}},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"
    assert live.provider.started == 0


async def test_without_a_store_the_endpoints_say_so() -> None:
    async with live_server(settings(store={"url": ""})) as live:
        response = await live.client.post("/v1/conversations", json={})
        assert response.status_code == 501
        assert response.json()["error"]["code"] == "store_disabled"
        # Turns still stream; a conversation id is then only a label.
        events = await turn(
            live, {"prompt": "x", "conversation_id": "c1", "script": {"tokens": ["a"]}}
        )
        assert events[-1].type == "done" and events[-1].context is None

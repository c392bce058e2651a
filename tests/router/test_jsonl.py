"""The JSONL sink: one valid line per delivery, never interleaved."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from tokenwire.router import JsonlSink, Router


async def test_concurrent_deliveries_write_one_valid_line_each(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "turns.jsonl"  # the directory does not exist yet
    sink = JsonlSink(path)
    # Large answers with newlines make an interleaved or torn line visible.
    records = [{"stream_id": f"s{i}", "answer": f"{i}\n" * 5000} for i in range(40)]
    await asyncio.gather(*(sink.deliver(r, f"{r['stream_id']}:audit") for r in records))
    await sink.aclose()

    lines = path.read_bytes().splitlines()
    assert len(lines) == 40
    parsed = [orjson.loads(line) for line in lines]
    assert sorted(p["idempotency_key"] for p in parsed) == sorted(f"s{i}:audit" for i in range(40))
    for entry in parsed:
        number = entry["record"]["stream_id"][1:]
        assert entry["record"]["answer"] == f"{number}\n" * 5000
        assert isinstance(entry["delivered_at"], float)


async def test_appends_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "turns.jsonl"
    path.write_bytes(b'{"existing": true}\n')
    async with Router() as router:
        router.route("audit", None, JsonlSink(path))
        [first] = await router.dispatch({"stream_id": "s1"})
        path.rename(tmp_path / "turns.jsonl.1")  # logrotate moves the file away
        [second] = await router.dispatch({"stream_id": "s2"})
    assert first.ok and second.ok and first.attempts == 1
    assert len((tmp_path / "turns.jsonl.1").read_bytes().splitlines()) == 2
    [line] = path.read_bytes().splitlines()
    assert orjson.loads(line)["record"] == {"stream_id": "s2"}


async def test_an_unwritable_path_is_an_error_result(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    async with Router() as router:
        router.route("audit", None, JsonlSink(blocker / "turns.jsonl"))
        [result] = await router.dispatch({"stream_id": "s1"})
    assert result.outcome == "error"
    assert result.error is not None and result.error.startswith(
        ("FileExistsError", "NotADirectory")
    )


def test_repr() -> None:
    assert repr(JsonlSink("/tmp/x.jsonl")) == "JsonlSink('/tmp/x.jsonl')"

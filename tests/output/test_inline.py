from __future__ import annotations

import codecs
import itertools
import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tokenwire.output import DEFAULT_END, DEFAULT_START, InlineSplitter, inline_instructions
from tokenwire.output.repair import loads

from .strategies import cuts, json_containers, json_values

# Answer text rich in what could be confused with the markers.
_answer_pieces = st.sampled_from(
    [
        "<",
        "<j",
        "<js",
        "<jso",
        "<json",
        "json>",
        "</json",
        "</",
        ">",
        "<b>",
        "\n",
        "\r\n",
        "é",
        "😀",
    ]
)
answers = st.lists(_answer_pieces | st.text(max_size=6), max_size=12).map("".join)


def run(chunks: list[str], **markers: str) -> tuple[str, str, InlineSplitter]:
    splitter = InlineSplitter(**markers)
    visible, json_text = [], []
    for chunk in [*chunks, None]:
        out = splitter.feed(chunk) if chunk is not None else splitter.finish()
        visible.append(out.visible)
        json_text.append(out.json_text)
    return "".join(visible), "".join(json_text), splitter


def block(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@settings(max_examples=400)
@given(data=st.data(), answer=answers, value=json_values, trailer=st.sampled_from(["", "\n", "x<"]))
def test_visible_is_exactly_the_answer_however_the_stream_splits(
    data: st.DataObject, answer: str, value: Any, trailer: str
) -> None:
    assume(DEFAULT_START not in answer and DEFAULT_END not in block(value))
    stream = answer + DEFAULT_START + block(value) + DEFAULT_END + trailer
    visible, json_text, splitter = run(data.draw(cuts(stream)))
    assert visible == answer
    assert loads(json_text) == value
    assert splitter.block_ended
    assert splitter.trailing == trailer


@settings(max_examples=200)
@given(data=st.data(), answer=answers, value=json_containers)
def test_any_byte_split_through_an_incremental_decoder(
    data: st.DataObject, answer: str, value: Any
) -> None:
    assume(DEFAULT_START not in answer and DEFAULT_END not in block(value))
    raw = (answer + DEFAULT_START + block(value) + DEFAULT_END).encode()
    points = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=16)))
    bounds = [0, *points, len(raw)]
    decoder = codecs.getincrementaldecoder("utf-8")()
    chunks = [decoder.decode(raw[a:b]) for a, b in itertools.pairwise(bounds)]
    visible, json_text, _ = run(chunks)
    assert visible == answer
    assert loads(json_text) == value


def test_every_one_and_two_cut_split_of_a_fixed_stream() -> None:
    answer = "a <j < </ <json ok\n"
    stream = answer + '<json>{"k": "v<"}</json>'
    n = len(stream)
    for i in range(n + 1):
        for j in range(i, n + 1):
            visible, json_text, _ = run([stream[:i], stream[i:j], stream[j:]])
            assert (visible, json_text) == (answer, '{"k": "v<"}'), (i, j)
    visible, json_text, _ = run(list(stream))
    assert (visible, json_text) == (answer, '{"k": "v<"}')


@given(text=answers)
def test_hold_back_is_bounded_and_released(text: str) -> None:
    assume(DEFAULT_START not in text)
    splitter = InlineSplitter()
    released = ""
    for i, ch in enumerate(text):
        released += splitter.feed(ch).visible
        fed = text[: i + 1]
        assert fed.startswith(released)
        held = fed[len(released) :]
        assert len(held) < len(DEFAULT_START)
        assert held == "" or DEFAULT_START.startswith(held)
    released += splitter.finish().visible
    assert released == text
    assert not splitter.block_started


def test_plain_text_is_released_at_once() -> None:
    assert InlineSplitter().feed("Hello, world").visible == "Hello, world"
    assert InlineSplitter().feed("Hello <").visible == "Hello "


def test_truncated_block_gives_its_text_to_extraction_only() -> None:
    visible, json_text, splitter = run(["Answer.<json>", '{"a": [1,', "</js"])
    assert visible == "Answer."
    assert json_text == '{"a": [1,</js'
    assert splitter.block_started and not splitter.block_ended


def test_text_after_the_block_is_dropped_and_kept_for_diagnostics() -> None:
    visible, json_text, splitter = run(["Hi<json>[1]</json> bye", " <json>[2]</json>"])
    assert (visible, json_text) == ("Hi", "[1]")
    assert splitter.trailing == " bye <json>[2]</json>"


@settings(max_examples=200)
@given(data=st.data(), answer=answers, value=json_containers)
def test_fence_markers_keep_the_guarantee(data: st.DataObject, answer: str, value: Any) -> None:
    start, end = "```json\n", "\n```"
    assume(start not in answer and end not in block(value))
    stream = answer + start + block(value) + end
    visible, json_text, _ = run(data.draw(cuts(stream)), start=start, end=end)
    assert visible == answer
    assert loads(json_text) == value


def test_feed_after_finish_is_an_error_and_markers_must_exist() -> None:
    splitter = InlineSplitter()
    splitter.finish()
    with pytest.raises(RuntimeError):
        splitter.feed("x")
    with pytest.raises(ValueError):
        InlineSplitter(start="")


def test_instructions_name_the_markers_and_carry_the_schema() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    text = inline_instructions(schema, start="<data>", end="</data>")
    assert "<data>" in text and "</data>" in text
    assert '{"type":"object","properties":{"city":{"type":"string"}}}' in text

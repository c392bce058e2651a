from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire.output import UNCHANGED, PartialJSON

from .strategies import cuts, json_containers


def emissions(chunks: list[str]) -> tuple[list[Any], PartialJSON]:
    parser = PartialJSON()
    out = [v for v in (parser.feed(c) for c in chunks) if v is not UNCHANGED]
    return out, parser


@settings(max_examples=300)
@given(data=st.data(), value=json_containers, indent=st.sampled_from([None, 2]))
def test_emits_only_changes_and_ends_with_the_whole_value(
    data: st.DataObject, value: Any, indent: int | None
) -> None:
    text = "  ```json\n" + json.dumps(value, indent=indent, ensure_ascii=False) + "\n```\n"
    out, parser = emissions(data.draw(cuts(text)))
    assert out, "at least the final value is emitted"
    assert out[-1] == value
    assert all(a != b for a, b in itertools.pairwise(out))
    assert parser.complete
    assert parser.value == value


def test_one_character_at_a_time() -> None:
    text = '{"name": "Ada", "n": 123, "ok": true, "tags": ["x", null]}'
    out, parser = emissions(list(text))
    assert out[0] == {}
    assert {"name": "Ad"} in out  # strings grow as they stream
    # A number or literal appears only once complete: never 1 or 12, never a cut-off literal.
    assert all(o.get("n") in (None, 123) for o in out)
    assert {"name": "Ada", "n": 123} in out
    assert out[-1] == json.loads(text)
    assert parser.text == text


def test_repeats_and_text_after_the_value_are_unchanged() -> None:
    parser = PartialJSON()
    assert parser.feed("Sure, here it is: ") is UNCHANGED
    assert parser.value is UNCHANGED
    assert parser.feed('{"a": 1') == {}
    assert parser.feed(" ") == {"a": 1}
    assert parser.feed("  ") is UNCHANGED
    assert parser.feed("}") is UNCHANGED  # closing changes nothing visible
    assert parser.complete
    assert parser.feed('\n```\n{"b": 2}') is UNCHANGED
    assert parser.text == '{"a": 1   }'


def test_malformed_text_keeps_the_last_good_preview() -> None:
    parser = PartialJSON()
    assert parser.feed('{"a": "x", ') == {"a": "x"}
    assert parser.feed("oops") is UNCHANGED
    assert parser.value == {"a": "x"}

from __future__ import annotations

import json
from typing import Any

from tokenwire.output import (
    SchemaIssue,
    check_schema,
    extraction_messages,
    extraction_prompt,
    reask_messages,
    validate,
)
from tokenwire.output.example import example_values
from tokenwire.output.prompt import PLAIN, PromptShape

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "country": {}}}


def test_sequential_messages_carry_question_answer_and_schema() -> None:
    messages = extraction_messages("Where is Paris?", "Paris is in France.", SCHEMA)
    assert [role for role, _ in messages] == ["system", "user"]
    assert "single JSON value" in messages[0][1] and "nothing else" in messages[0][1]
    user = messages[1][1]
    assert "Where is Paris?" in user and "Paris is in France." in user
    assert '"city":{"type":"string"}' in user


def test_parallel_messages_have_no_answer() -> None:
    user = extraction_messages("Where is Paris?", None, SCHEMA)[1][1]
    assert "Answer:" not in user and "from the user message" in user


def test_completion_prompt_for_base_models() -> None:
    prompt = extraction_prompt("Where is Paris?", "In France.", SCHEMA)
    assert (
        prompt
        == 'Extract the fields city, country as JSON.\nText: "Where is Paris?\\nIn France."\nJSON: '
    )
    assert extraction_prompt("hi", None, {"type": "array"}).startswith(
        "Extract the data as JSON.\n"
    )


def test_reask_carries_the_errors() -> None:
    issues = [SchemaIssue("$.city", "1 is not of type 'string'")]
    (role1, previous), (role2, ask) = reask_messages('{"city": 1}', issues)
    assert (role1, previous, role2) == ("assistant", '{"city": 1}', "user")
    assert "- $.city: 1 is not of type 'string'" in ask
    parse_failure = reask_messages("{", "the JSON value ends before it closes")[1][1]
    assert "not valid JSON: the JSON value ends before it closes" in parse_failure


LABELLED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sentiment": {
            "type": "string",
            "enum": ["positive", "negative", "neutral"],
            "description": "how the writer feels",
        },
        "topic": {"type": "string", "enum": ["food", "travel"]},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
        "score": {"type": "integer", "exclusiveMinimum": 0, "maximum": 5},
    },
    "required": ["sentiment", "topic", "urgent", "tags", "score"],
    "additionalProperties": False,
}


def test_plain_shape_is_the_text_the_fields_and_the_cue() -> None:
    plain = extraction_prompt("Where is Paris?", "In France.", SCHEMA, PromptShape())
    assert plain == extraction_prompt("Where is Paris?", "In France.", SCHEMA, PLAIN)
    assert plain.startswith("Text: Where is Paris?")
    assert "Fields:" not in plain and "Example JSON" not in plain and '"' not in plain


def test_examples_are_built_from_the_schema_and_validate() -> None:
    examples = example_values(LABELLED_SCHEMA, 3)
    assert len(examples) == 3
    resolved = check_schema(LABELLED_SCHEMA)
    assert all(validate(value, resolved) == [] for value in examples)
    # The enum values take turns, so no value is suggested more than the others.
    assert [e["sentiment"] for e in examples] == ["positive", "negative", "neutral"]
    assert [e["topic"] for e in examples] == ["food", "travel", "food"]


def test_examples_prefer_the_schema_s_own_and_skip_what_cannot_validate() -> None:
    own = {"type": "object", "examples": [{"a": 1}], "properties": {"a": {"type": "integer"}}}
    assert example_values(own, 3) == [{"a": 1}]
    assert example_values({"type": "string", "pattern": "^[0-9]+$"}, 2) == []
    wrong = {"type": "object", "examples": [{"a": "x"}], "properties": {"a": {"type": "integer"}}}
    assert example_values(wrong, 1) == []


def test_example_lines_show_every_example() -> None:
    prompt = extraction_prompt("I loved it.", None, LABELLED_SCHEMA, PromptShape(examples=2))
    lines = [line for line in prompt.splitlines() if line.startswith("Example JSON: ")]
    assert [json.loads(line.removeprefix("Example JSON: ")) for line in lines] == (
        example_values(LABELLED_SCHEMA, 2)
    )
    assert prompt.index("Example JSON") < prompt.index("Text: ")


def test_quoted_text_is_one_escaped_json_string() -> None:
    tricky = 'He said "no"\nthen left \\ slowly'
    prompt = extraction_prompt(tricky, None, SCHEMA, PromptShape(quoted=True))
    text_line = next(line for line in prompt.splitlines() if line.startswith("Text: "))
    assert json.loads(text_line.removeprefix("Text: ")) == tricky
    assert prompt.endswith("\nExtract the fields city, country as JSON.\nJSON: ")


def test_field_lines_list_enum_values_and_descriptions() -> None:
    prompt = extraction_prompt("I loved it.", None, LABELLED_SCHEMA, PromptShape(descriptions=True))
    assert '- sentiment: one of "positive", "negative", "neutral". How the writer feels.' in prompt
    assert '- topic: one of "food", "travel".' in prompt
    assert "- urgent: a boolean." in prompt and "- tags: a list." in prompt
    assert prompt.index("Fields:") < prompt.index("Text: I loved it.")


def test_named_values_sit_in_the_instruction() -> None:
    prompt = extraction_prompt("I loved it.", None, LABELLED_SCHEMA, PromptShape(named_values=True))
    assert prompt.endswith(
        "Extract the fields sentiment (positive, negative or neutral), topic (food or travel),"
        " urgent, tags, score as JSON.\nJSON: "
    )


def test_text_last_puts_the_text_right_before_the_cue() -> None:
    prompt = extraction_prompt("I loved it.", None, SCHEMA, PromptShape(text_last=True))
    assert prompt == "Extract the fields city, country as JSON.\nText: I loved it.\nJSON: "
    quoted = extraction_prompt(
        "I loved it.", None, SCHEMA, PromptShape(text_last=True, quoted=True)
    )
    assert quoted.endswith('\nText: "I loved it."\nJSON: ')

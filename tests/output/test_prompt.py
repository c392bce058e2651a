from __future__ import annotations

from tokenwire.output import SchemaIssue, extraction_messages, extraction_prompt, reask_messages

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
        == "Text: Where is Paris?\nIn France.\nExtract the fields city, country as JSON.\nJSON: "
    )
    assert extraction_prompt("hi", None, {"type": "array"}).endswith(
        "Extract the data as JSON.\nJSON: "
    )


def test_reask_carries_the_errors() -> None:
    issues = [SchemaIssue("$.city", "1 is not of type 'string'")]
    (role1, previous), (role2, ask) = reask_messages('{"city": 1}', issues)
    assert (role1, previous, role2) == ("assistant", '{"city": 1}', "user")
    assert "- $.city: 1 is not of type 'string'" in ask
    parse_failure = reask_messages("{", "the JSON value ends before it closes")[1][1]
    assert "not valid JSON: the JSON value ends before it closes" in parse_failure

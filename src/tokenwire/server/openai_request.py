"""Sans-I/O: a ``POST /v1/chat/completions`` body → the body of a tokenwire turn.

:func:`parse_chat_request` validates and translates, or raises :class:`OpenAIRequestError`
(400 naming the field in ``param``; 404 ``model_not_found``). The turn body it makes is then
validated by the engine like any other (``Engine.submit``).

Request fields, by what happens to them:

- honoured: ``model`` (a tokenwire route), ``messages`` (``system``, ``developer`` = system,
  ``user``, ``assistant``; content a string or a list of ``text`` parts, joined with ``"\\n"``),
  ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``stop``, ``n`` (1 only),
  ``stream``, ``stream_options.include_usage``, ``user``, ``safety_identifier`` and
  ``metadata`` (kept in the turn's record metadata), and ``tokenwire`` (an extension object:
  ``deadlines``, ``conversation_id``, ``script``);
- ignored, because they change nothing about the answer: ``service_tier``, ``store`` (the
  server's ``[store]`` decides what tokenwire records), ``prompt_cache_key``,
  ``prompt_cache_retention``, ``prompt_cache_options``, ``parallel_tool_calls``,
  ``stream_options.include_obfuscation`` (no ``obfuscation`` field is ever sent);
- accepted only at their no-op value: ``top_p`` 1, ``frequency_penalty`` 0,
  ``presence_penalty`` 0, ``logprobs`` false, ``top_logprobs`` 0, ``logit_bias`` {},
  ``tools`` / ``functions`` [], ``tool_choice`` / ``function_call`` ``none`` or ``auto``,
  ``modalities`` ``["text"]``, ``response_format`` ``{"type": "text"}``;
- anything else set to a non-null value (``seed``, ``audio``, ``prediction``,
  ``reasoning_effort``, ``verbosity``, ``web_search_options``, tools, a message ``name``, image
  or audio parts, ``tool`` messages, ...) is a 400 naming the field: tokenwire cannot honour it
  and will not pretend to. A field OpenAI does not know either is a 400 too, as at OpenAI.

``null`` is the same as absent for every known field, as at OpenAI (SDKs echo ``refusal: null``
and ``tool_calls: null`` back in assistant messages).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

_HONOURED: Final = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "stop",
        "n",
        "user",
        "safety_identifier",
        "metadata",
        "tokenwire",
    }
)
_IGNORED: Final = frozenset(
    {
        "service_tier",
        "store",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "parallel_tool_calls",
    }
)
_NO_OP_VALUES: Final[dict[str, tuple[Any, ...]]] = {
    "top_p": (1,),
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "modalities": (["text"],),
    "response_format": ({"type": "text"},),
}
_UNSUPPORTED: Final = frozenset(
    {
        "seed",
        "audio",
        "prediction",
        "reasoning_effort",
        "verbosity",
        "web_search_options",
        "moderation",
    }
)
_EXTENSION_FIELDS: Final = frozenset({"deadlines", "conversation_id", "script"})
_ROLES: Final = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_NULL_ONLY_MESSAGE_FIELDS: Final = frozenset(
    {"refusal", "tool_calls", "function_call", "audio", "annotations"}
)
_WHY_NOT: Final = {
    "tools": "tools are not supported yet",
    "functions": "functions are not supported",
    "tool_choice": "tools are not supported yet",
    "function_call": "functions are not supported",
    "response_format": "structured output is served by POST /v1/streams (`extraction`)",
    "modalities": "only text output is supported",
}


class OpenAIRequestError(Exception):
    """The request cannot be served as asked: answered with ``status`` and the OpenAI error
    object (``param`` names the offending field, when there is one)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A Chat Completions request, understood."""

    model: str
    """The route that serves it (and the ``model`` every response names)."""
    turn: dict[str, Any]
    """The body of the tokenwire turn (``Engine.submit`` validates it further)."""
    stream: bool
    include_usage: bool


def parse_chat_request(body: Mapping[str, Any], routes: Collection[str]) -> ChatRequest:
    """Validate an OpenAI request body and translate it (see the module docstring for what is
    honoured, ignored or refused). ``routes``: the configured route names, the valid models.
    Raises :class:`OpenAIRequestError` (400; 404 ``model_not_found``)."""
    for name, value in body.items():
        _check_field(name, value)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIRequestError("`model` is required (a string)", param="model")
    if model not in routes:
        raise OpenAIRequestError(
            f"The model `{model}` does not exist; GET /v1/models lists the models",
            param="model",
            code="model_not_found",
            status=404,
        )
    stream = _optional(body, "stream", bool) or False
    options = _optional(body, "stream_options", dict)
    include_usage = False
    if options is not None:
        if not stream:
            raise OpenAIRequestError(
                "`stream_options` is only allowed when `stream` is true", param="stream_options"
            )
        for key in options:
            if key not in ("include_usage", "include_obfuscation"):
                raise OpenAIRequestError(
                    f"Unrecognized stream option: {key}", param=f"stream_options.{key}"
                )
        include_usage = _optional(options, "include_usage", bool, "stream_options.") or False
        _optional(options, "include_obfuscation", bool, "stream_options.")
    turn: dict[str, Any] = {"route": model, "messages": _messages(body.get("messages"))}
    max_tokens = _max_tokens(body)
    if max_tokens is not None:
        turn["max_tokens"] = max_tokens
    temperature = _optional(body, "temperature", (int, float))
    if temperature is not None:
        turn["temperature"] = float(temperature)
    stop = body.get("stop")
    if isinstance(stop, str):
        turn["stop"] = [stop]
    elif stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise OpenAIRequestError("`stop` must be a string or a list of strings", param="stop")
        turn["stop"] = stop
    n = _optional(body, "n", int)
    if n is not None and n != 1:
        raise OpenAIRequestError("only `n` = 1 is supported", param="n")
    metadata = _metadata(body)
    if metadata:
        turn["metadata"] = metadata
    extension = _optional(body, "tokenwire", dict)
    for key, value in (extension or {}).items():
        if key not in _EXTENSION_FIELDS:
            raise OpenAIRequestError(
                f"unknown tokenwire field `{key}`; known: {', '.join(sorted(_EXTENSION_FIELDS))}",
                param=f"tokenwire.{key}",
            )
        if value is not None:
            turn[key] = value
    return ChatRequest(model=model, turn=turn, stream=stream, include_usage=include_usage)


def _check_field(name: str, value: Any) -> None:
    if name in _HONOURED or name in _IGNORED or (value is None and name in _NO_OP_VALUES):
        return
    if name in _NO_OP_VALUES:
        if _is_no_op(value, _NO_OP_VALUES[name]):
            return
        why = _WHY_NOT.get(name, "tokenwire cannot honour it")
        raise OpenAIRequestError(f"`{name}` = {value!r} is not supported: {why}", param=name)
    if name in _UNSUPPORTED:
        if value is None:
            return
        raise OpenAIRequestError(f"`{name}` is not supported by tokenwire", param=name)
    raise OpenAIRequestError(f"Unrecognized request argument supplied: {name}", param=name)


def _is_no_op(value: Any, no_ops: tuple[Any, ...]) -> bool:
    # `True == 1` in Python: a boolean is only ever the no-op of a boolean field.
    return any(type(value) is type(v) or _numbers(value, v) for v in no_ops if value == v)


def _numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def _optional(
    body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], prefix: str = ""
) -> Any:
    """The field's value, None when absent or null; a 400 when it has the wrong JSON type."""
    value = body.get(name)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        expected = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
        raise OpenAIRequestError(f"`{prefix}{name}` must be {expected}", param=prefix + name)
    return value


_JSON_NAMES: Final[dict[type, str]] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "an object",
    list: "an array",
}


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    legacy = _optional(body, "max_tokens", int)
    current = _optional(body, "max_completion_tokens", int)
    if legacy is not None and current is not None and legacy != current:
        raise OpenAIRequestError(
            "give one of `max_tokens` and `max_completion_tokens`", param="max_tokens"
        )
    value: int | None = current if current is not None else legacy
    if value is not None and value < 1:
        param = "max_completion_tokens" if current is not None else "max_tokens"
        raise OpenAIRequestError(f"`{param}` must be at least 1", param=param)
    return value


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = dict(_optional(body, "metadata", dict) or {})
    for name in ("user", "safety_identifier"):
        value = _optional(body, name, str)
        if value is None:
            continue
        if name in metadata and metadata[name] != value:
            raise OpenAIRequestError(
                f"`{name}` and `metadata.{name}` differ; give it once", param=name
            )
        metadata[name] = value
    return metadata


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise OpenAIRequestError("`messages` must be a non-empty array", param="messages")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(raw)]


def _message(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise OpenAIRequestError(f"`{where}` must be an object", param=where)
    role = raw.get("role")
    if role in ("tool", "function"):
        raise OpenAIRequestError(
            f"`{where}.role` {role!r}: tools are not supported yet", param=f"{where}.role"
        )
    if role not in _ROLES:
        raise OpenAIRequestError(
            f"`{where}.role` must be one of {', '.join(_ROLES)}", param=f"{where}.role"
        )
    for key, value in raw.items():
        if key in ("role", "content"):
            continue
        if key in _NULL_ONLY_MESSAGE_FIELDS and role == "assistant":
            if value is None or value == []:
                continue
            why = "tools are not supported yet" if "call" in key else "only text is supported"
            raise OpenAIRequestError(f"`{where}.{key}`: {why}", param=f"{where}.{key}")
        if key == "name":
            if value is None:
                continue
            raise OpenAIRequestError(
                f"`{where}.name` is not supported: tokenwire cannot tell participants apart",
                param=f"{where}.name",
            )
        raise OpenAIRequestError(f"Unrecognized message field: {key}", param=f"{where}.{key}")
    return {"role": _ROLES[role], "content": _content(raw.get("content"), f"{where}.content")}


def _content(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return "\n".join(_text_part(part, f"{where}[{i}]") for i, part in enumerate(raw))
    raise OpenAIRequestError(f"`{where}` must be a string or an array of text parts", param=where)


def _text_part(raw: Any, where: str) -> str:
    if not isinstance(raw, dict):
        raise OpenAIRequestError(f"`{where}` must be an object", param=where)
    kind = raw.get("type")
    if kind != "text":
        raise OpenAIRequestError(
            f"`{where}.type` {kind!r} is not supported: only text parts are", param=f"{where}.type"
        )
    text = raw.get("text")
    unknown = set(raw) - {"type", "text"}
    if unknown:
        key = sorted(unknown)[0]
        raise OpenAIRequestError(f"Unrecognized content part field: {key}", param=f"{where}.{key}")
    if not isinstance(text, str):
        raise OpenAIRequestError(f"`{where}.text` must be a string", param=f"{where}.text")
    return text
